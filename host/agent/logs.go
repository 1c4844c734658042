package agent

import (
	"sync"
	"time"
)

// logMarks remember, per app, where its log stood at each size check: how
// many rotations had happened and the live log's size. App output carries
// no timestamps of its own (containerd's shim writes it to the file as it
// comes), so `pullwise logs --since` starts at the last mark at or before
// its time: everything since then, and at most one check interval more.
// Kept in memory only (no flash writes); an agent restart starts afresh.
type logMarks struct {
	mu   sync.Mutex
	apps map[string]*appMarks
}

type appMarks struct {
	rotations int
	marks     []logMark
}

type logMark struct {
	at        time.Time
	rotations int
	size      int64
}

// maxMarks bounds the marks kept per app: a day at the default 30 s check.
const maxMarks = 2880

// LogPosition is where an app's output since a time starts: in the live
// log (File 0) or its rotated copy LOG.File, at Offset. Found is false when
// no mark is that old (the agent started later, or the marks were
// dropped): then the whole kept log is meant.
type LogPosition struct {
	File     int       `json:"file"`
	Offset   int64     `json:"offset"`
	Found    bool      `json:"found"`
	MarkedAt time.Time `json:"markedAt,omitzero"`
}

func (l *logMarks) record(uuid string, at time.Time, rotated bool, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.apps == nil {
		l.apps = map[string]*appMarks{}
	}
	m := l.apps[uuid]
	if m == nil {
		m = &appMarks{}
		l.apps[uuid] = m
	}
	if rotated {
		m.rotations++
	}
	m.marks = append(m.marks, logMark{at: at, rotations: m.rotations, size: size})
	if len(m.marks) > maxMarks {
		m.marks = m.marks[len(m.marks)-maxMarks:]
	}
}

// since is where the app's output since t starts, given that keep rotated
// copies exist at most.
func (l *logMarks) since(uuid string, t time.Time, keep int) LogPosition {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.apps[uuid]
	if m == nil {
		return LogPosition{}
	}
	var best *logMark
	for i := range m.marks {
		if m.marks[i].at.After(t) {
			break
		}
		best = &m.marks[i]
	}
	if best == nil {
		return LogPosition{}
	}
	file := m.rotations - best.rotations
	if file > keep {
		return LogPosition{} // rotated away: all that is kept is newer
	}
	return LogPosition{File: file, Offset: best.size, Found: true, MarkedAt: best.at}
}
