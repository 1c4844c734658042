package budget

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestWindow(t *testing.T) {
	for _, c := range []struct {
		name       string
		plan       Plan
		now        string
		start, end string
	}{
		{"day", Plan{Period: Day}, "2026-12-02T22:15:00Z", "2026-12-02T00:00:00Z", "2026-12-03T00:00:00Z"},
		{"day, in another zone", Plan{Period: Day}, "2026-12-02T23:30:00-02:00", "2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z"},
		{"month from the 1st", Plan{Period: Month}, "2026-12-02T10:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"},
		{"month from the 15th, before it", Plan{Period: Month, ResetDay: 15}, "2026-12-02T10:00:00Z", "2026-11-15T00:00:00Z", "2026-12-15T00:00:00Z"},
		{"month from the 15th, on it", Plan{Period: Month, ResetDay: 15}, "2026-12-15T00:00:00Z", "2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z"},
		{"month across a year", Plan{Period: Month, ResetDay: 28}, "2027-01-03T00:00:00Z", "2026-12-28T00:00:00Z", "2027-01-28T00:00:00Z"},
		{"week from Sunday", Plan{Period: Week}, "2026-12-02T10:00:00Z", "2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z"},
		{"week from Wednesday, on it", Plan{Period: Week, ResetDay: 3}, "2026-12-02T10:00:00Z", "2026-12-02T00:00:00Z", "2026-12-09T00:00:00Z"},
		{"week from Thursday", Plan{Period: Week, ResetDay: 4}, "2026-12-02T10:00:00Z", "2026-11-26T00:00:00Z", "2026-12-03T00:00:00Z"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start, end := c.plan.Window(at(c.now))
			if !start.Equal(at(c.start)) || !end.Equal(at(c.end)) {
				t.Errorf("Window(%s) = %s .. %s, want %s .. %s", c.now, start, end, c.start, c.end)
			}
		})
	}
}

// lastTx is the id of the state file's last write transaction.
func lastTx(t *testing.T, db *bolt.DB) int {
	t.Helper()
	var id int
	if err := db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestSpentSurvivesRestartsWithoutIdleWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var received int64 = 5000 // traffic before the meter opened is not spent
	m, err := Open(db, func() int64 { return received })
	if err != nil {
		t.Fatal(err)
	}
	plan := &Plan{Limit: 1 << 20, Period: Month}
	now := at("2026-12-02T10:00:00Z")
	if b := m.Observe(now, plan); b.SpentBytes != 0 || b.RemainingBytes != 1<<20 || !b.Resets.Equal(at("2027-01-01T00:00:00Z")) {
		t.Fatalf("fresh budget: %+v", b)
	}
	received += 300 << 10
	if b := m.Observe(now, plan); b.SpentBytes != 300<<10 || b.RemainingBytes != 724<<10 {
		t.Fatalf("after 300 KiB: %+v", b)
	}
	if err := m.Save(now, false); err != nil {
		t.Fatal(err)
	}
	written := lastTx(t, db)
	// More traffic within the minute: not written yet.
	received += 100 << 10
	m.Observe(now.Add(10*time.Second), plan)
	m.Save(now.Add(10*time.Second), false)
	if lastTx(t, db) != written {
		t.Fatal("written twice within a minute")
	}
	m.Save(now.Add(61*time.Second), false)
	written = lastTx(t, db)
	// Idle: nothing changes, nothing is written, however often asked.
	for i := range 100 {
		later := now.Add(time.Duration(62+i) * time.Minute)
		m.Observe(later, plan)
		m.Save(later, i%2 == 0)
	}
	if lastTx(t, db) != written {
		t.Fatal("an idle meter wrote the state file")
	}
	db.Close()

	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	received = 0 // a new agent's client counts from 0
	m, err = Open(db, func() int64 { return received })
	if err != nil {
		t.Fatal(err)
	}
	if b := m.Observe(now.Add(3*time.Hour), plan); b.SpentBytes != 400<<10 {
		t.Fatalf("after a restart: spent %d, want %d", b.SpentBytes, 400<<10)
	}
	// The next period starts from 0.
	if b := m.Observe(at("2027-01-01T00:00:01Z"), plan); b.SpentBytes != 0 || !b.Resets.Equal(at("2027-02-01T00:00:00Z")) {
		t.Fatalf("next month: %+v", b)
	}
	// Without a plan: nothing counted, nil for policies.
	if b := m.Observe(now, nil); b != nil {
		t.Fatalf("no plan: %+v", b)
	}
}
