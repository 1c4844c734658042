// Package budget keeps the device's data budget: how many bytes its
// registry traffic brought in the current period (a UTC calendar day, week
// or month), across agent restarts. What was spent is written to the state
// file only when it changed, and at most once a minute (Save): an idle
// device writes nothing, and a busy one once a minute. Deciding what to do
// with the budget is the policies' (sdk.WithinBudget); this package only
// counts.
package budget

import (
	"encoding/json"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/sdk"
)

// Period is how long a budget lasts before it starts again.
type Period string

// The periods, as the configuration names them.
const (
	Day   Period = "day"
	Week  Period = "week"
	Month Period = "month"
)

// Plan is a budget as configured.
type Plan struct {
	// Limit is the bytes a period may bring.
	Limit  int64
	Period Period
	// ResetDay is, for Month, the day of the month a period starts on (1
	// to 28; 0 is 1), and for Week the weekday (0 Sunday to 6 Saturday; 0
	// is Sunday). Day ignores it. Periods start at 00:00 UTC.
	ResetDay int
}

// Window is the period that holds t: from start (inclusive) to end, when
// the next one starts.
func (p Plan) Window(t time.Time) (start, end time.Time) {
	t = t.UTC()
	day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	switch p.Period {
	case Week:
		back := (int(day.Weekday()) - p.ResetDay%7 + 7) % 7
		start = day.AddDate(0, 0, -back)
		return start, start.AddDate(0, 0, 7)
	case Month:
		rd := max(p.ResetDay, 1)
		start = time.Date(t.Year(), t.Month(), rd, 0, 0, 0, 0, time.UTC)
		if day.Before(start) {
			start = start.AddDate(0, -1, 0)
		}
		return start, start.AddDate(0, 1, 0)
	default:
		return day, day.AddDate(0, 0, 1)
	}
}

// bucket and key of the record in the state file.
var (
	bucket = []byte("budget")
	key    = []byte("spent")
)

// record is what is kept: the bytes spent in the period that started at
// Start.
type record struct {
	Spent int64     `json:"spent"`
	Start time.Time `json:"start"`
}

// Meter counts a device's traffic against its budget. Its methods are safe
// for concurrent use.
type Meter struct {
	db       *bolt.DB
	received func() int64

	mu      sync.Mutex
	base    int64 // received() when last folded in
	rec     record
	saved   record
	savedAt time.Time
}

// Open loads what was spent from the state file. received is the running
// count of bytes the registry client has read (registry.Client.Received):
// what it brings from now on is spent.
func Open(db *bolt.DB, received func() int64) (*Meter, error) {
	m := &Meter{db: db, received: received, base: received()}
	err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucket); b != nil {
			if v := b.Get(key); v != nil {
				return json.Unmarshal(v, &m.rec)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the data budget: %w", err)
	}
	m.saved = m.rec
	return m, nil
}

// Observe folds in the traffic since the last call and returns the budget
// as policies see it at now; nil without a plan (traffic is then not
// counted). A new period starts from 0.
func (m *Meter) Observe(now time.Time, p *Plan) *sdk.Budget {
	m.mu.Lock()
	defer m.mu.Unlock()
	got := m.received()
	delta := got - m.base
	m.base = got
	if p == nil {
		return nil
	}
	start, end := p.Window(now)
	if !m.rec.Start.Equal(start) {
		m.rec = record{Start: start}
	}
	m.rec.Spent += max(delta, 0)
	return &sdk.Budget{LimitBytes: p.Limit, SpentBytes: m.rec.Spent, RemainingBytes: max(p.Limit-m.rec.Spent, 0), Resets: end}
}

// SaveEvery is the least time between two writes of what was spent.
const SaveEvery = time.Minute

// Save writes what was spent if it changed since the last write and
// SaveEvery has passed since then (force: whenever it changed, as at
// stop).
func (m *Meter) Save(now time.Time, force bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if (m.rec.Spent == m.saved.Spent && m.rec.Start.Equal(m.saved.Start)) || (!force && now.Sub(m.savedAt) < SaveEvery) {
		return nil
	}
	v, err := json.Marshal(m.rec)
	if err != nil {
		return err
	}
	err = m.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucket)
		if err != nil {
			return err
		}
		return b.Put(key, v)
	})
	if err != nil {
		return fmt.Errorf("writing the data budget: %w", err)
	}
	m.saved, m.savedAt = m.rec, now
	return nil
}
