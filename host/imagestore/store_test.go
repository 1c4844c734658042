package imagestore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/imagedigest"
	bolt "go.etcd.io/bbolt"
)

func digest(c byte) imagedigest.Digest {
	return imagedigest.Digest("sha256:" + strings.Repeat(string(c), 64))
}

// fileStore is a store in a bbolt file of its own; Close closes both.
type fileStore struct {
	*Store
	db *bolt.DB
}

func (s fileStore) Close() error { return errors.Join(s.Store.Close(), s.db.Close()) }

func openFile(path string) (fileStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return fileStore{}, err
	}
	s, err := New(db)
	if err != nil {
		db.Close()
		return fileStore{}, err
	}
	return fileStore{s, db}, nil
}

func open(t *testing.T) (fileStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "images.db")
	s, err := openFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestLatchIsNeverSilent(t *testing.T) {
	s, _ := open(t)
	if err := s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate}); err != nil {
		t.Fatal(err)
	}
	// Re-creating with the same SHA is fine (an agent restart re-creating apps).
	if err := s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate}); err != nil {
		t.Fatal(err)
	}
	// A create that would re-resolve to another SHA is refused.
	err := s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('b')}, Reason: LatchCreate})
	if !errors.Is(err, ErrAlreadyLatched) {
		t.Fatalf("silent re-resolution: %v", err)
	}
	// A refresh may move it, and the previous SHA is kept for rollback.
	if err := s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('b')}, Reason: LatchRefresh}); err != nil {
		t.Fatal(err)
	}
	r, ok, err := s.Get("img-1")
	if err != nil || !ok || r.Digest != digest('b') || r.PreviousDigest != digest('a') || r.Reason != LatchRefresh {
		t.Fatalf("after refresh: %+v %v %v", r, ok, err)
	}
}

// TestRolledBackMark: the digest an app was rolled back from stays marked
// while the latch stays (a create or policy latch of the same digest keeps
// it), and a refresh or a change to another digest drops it.
func TestRolledBackMark(t *testing.T) {
	tests := []struct {
		name string
		next Record
		want imagedigest.Digest
	}{
		{"same digest at create (agent restart)", Record{Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate}, digest('b')},
		{"same digest by a policy", Record{Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchPolicy}, digest('b')},
		{"refresh of the same digest", Record{Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchRefresh}, ""},
		{"moved to another digest", Record{Pair: imagedigest.Pair{Digest: digest('c')}, Reason: LatchPolicy}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := open(t)
			for _, r := range []Record{
				{Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate},
				{Pair: imagedigest.Pair{Digest: digest('b')}, Reason: LatchPolicy},
				{Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchRollback, RolledBackFrom: digest('b')},
				tc.next,
			} {
				r.ID, r.Ref = "img-1", "r/a:latest"
				if err := s.Latch(r); err != nil {
					t.Fatal(err)
				}
			}
			if r, _, _ := s.Get("img-1"); r.RolledBackFrom != tc.want {
				t.Fatalf("rolledBackFrom %q, want %q", r.RolledBackFrom, tc.want)
			}
		})
	}
}

func TestLatchValidates(t *testing.T) {
	s, _ := open(t)
	for _, rec := range []Record{
		{ID: "", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate},
		{ID: "x", Pair: imagedigest.Pair{Digest: "sha256:ABC"}, Reason: LatchCreate},
		{ID: "x", Pair: imagedigest.Pair{Digest: imagedigest.Digest(strings.ToUpper(digest('a').String()))}, Reason: LatchCreate},
		{ID: "x", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: "because"},
		{ID: "x", Pair: imagedigest.Pair{Digest: digest('a'), IndexDigest: "nope"}, Reason: LatchCreate},
	} {
		if err := s.Latch(rec); err == nil {
			t.Errorf("accepted %+v", rec)
		}
	}
}

func TestSeveralIDsOneSHA(t *testing.T) {
	s, _ := open(t)
	for _, id := range []string{"img-1", "img-2"} {
		if err := s.Latch(Record{ID: id, Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Latch(Record{ID: "img-3", Ref: "r/b:1", Pair: imagedigest.Pair{Digest: digest('c'), IndexDigest: digest('d')}, Reason: LatchCreate}); err != nil {
		t.Fatal(err)
	}
	ids, _ := s.References(digest('a'))
	if fmt.Sprint(ids) != "[img-1 img-2]" {
		t.Fatalf("references %v", ids)
	}
	onDisk := []imagedigest.Digest{digest('a'), digest('c'), digest('d'), digest('e')}
	if got, _ := s.Collectable(onDisk); fmt.Sprint(got) != fmt.Sprint([]imagedigest.Digest{digest('e')}) {
		t.Fatalf("collectable %v, want only the unreferenced one", got)
	}
	// Only when the last ID referring to a SHA goes is it collectable.
	s.Delete("img-1")
	if got, _ := s.Collectable(onDisk); len(got) != 1 {
		t.Fatalf("img-2 still refers to it: %v", got)
	}
	s.Delete("img-2")
	if got, _ := s.Collectable(onDisk); len(got) != 2 {
		t.Fatalf("after both went: %v", got)
	}
	// ...unless a refresh involving it is in flight.
	release := s.Hold(digest('a'))
	if got, _ := s.Collectable(onDisk); len(got) != 1 {
		t.Fatalf("held digest offered for collection: %v", got)
	}
	release()
	release() // idempotent
	if got, _ := s.Collectable(onDisk); len(got) != 2 {
		t.Fatalf("after release: %v", got)
	}
}

func TestRecordCheckKeepsLatch(t *testing.T) {
	s, _ := open(t)
	s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate})
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	if err := s.RecordCheck("img-1", at, digest('b'), "changed"); err != nil {
		t.Fatal(err)
	}
	r, _, _ := s.Get("img-1")
	if r.Digest != digest('a') || r.LastRemoteDigest != digest('b') || !r.LastCheck.Equal(at) || r.LastCheckResult != "changed" {
		t.Fatalf("%+v", r)
	}
	if err := s.RecordCheck("nope", at, digest('b'), "x"); err == nil {
		t.Fatal("check of an unknown ID accepted")
	}
}

// TestTornWrite kills a process with SIGKILL while it writes, many times,
// and requires the store to open and read whole records every time.
func TestTornWrite(t *testing.T) {
	if os.Getenv("PULLWISE_STORE_WRITER") != "" {
		s, err := openFile(os.Getenv("PULLWISE_STORE_WRITER"))
		if err != nil {
			os.Exit(2)
		}
		fmt.Println("ready")
		for i := 0; ; i++ {
			c := "abcdef0123456789"[i%16]
			s.Latch(Record{ID: fmt.Sprintf("img-%d", i%50), Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest(c)}, Reason: LatchRefresh,
				LastCheckResult: strings.Repeat("x", 1000)})
		}
	}
	path := filepath.Join(t.TempDir(), "images.db")
	for round := 0; round < 5; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestTornWrite$")
		cmd.Env = append(os.Environ(), "PULLWISE_STORE_WRITER="+path)
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		out.Read(buf)
		time.Sleep(time.Duration(20+round*15) * time.Millisecond) // let it write mid-transaction
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		s, err := openFile(path)
		if err != nil {
			t.Fatalf("round %d: store does not open after SIGKILL: %v", round, err)
		}
		recs, err := s.List()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for _, r := range recs {
			if !digestRE.MatchString(r.Digest.String()) || len(r.LastCheckResult) != 1000 {
				t.Fatalf("round %d: torn record %+v", round, r)
			}
		}
		s.Close()
	}
}

// TestChecksAreWrittenWithTheNextWrite: a check changes nothing on disk
// (flash wears) until the ID is latched again or the store closes; then it
// is there after a reopen.
func TestChecksAreWrittenWithTheNextWrite(t *testing.T) {
	s, path := open(t)
	s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate})
	s.Latch(Record{ID: "img-2", Ref: "r/b:latest", Pair: imagedigest.Pair{Digest: digest('b')}, Reason: LatchCreate})
	before, _ := os.ReadFile(path)
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	s.RecordCheck("img-1", at, digest('a'), "unchanged")
	s.RecordCheck("img-2", at, digest('c'), "changed")
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("a check wrote to the file")
	}
	// A latch writes its ID's check with it.
	s.Latch(Record{ID: "img-2", Ref: "r/b:latest", Pair: imagedigest.Pair{Digest: digest('c')}, Reason: LatchRefresh})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := openFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, id := range []string{"img-1", "img-2"} {
		if r, _, _ := s2.Get(id); !r.LastCheck.Equal(at) {
			t.Fatalf("%s after reopen: %+v", id, r)
		}
	}
}

// Records are read from memory, kept in step with the file: what a latch
// or a delete wrote is what the next Get and List see, and a reopen reads
// the same. A record that does not decode is reported, as it was when
// every read decoded the file, and spoils no other.
func TestRecordsInMemoryFollowTheFile(t *testing.T) {
	s, path := open(t)
	s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('a')}, Reason: LatchCreate})
	s.Latch(Record{ID: "img-2", Ref: "r/b:latest", Pair: imagedigest.Pair{Digest: digest('b')}, Reason: LatchCreate})
	s.Latch(Record{ID: "img-1", Ref: "r/a:latest", Pair: imagedigest.Pair{Digest: digest('c')}, Reason: LatchRefresh})
	s.Delete("img-2")
	mem, err := s.List()
	if err != nil || len(mem) != 1 || mem[0].Digest != digest('c') || mem[0].PreviousDigest != digest('a') {
		t.Fatalf("in memory: %+v, %v", mem, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketIDs).Put([]byte("img-9"), []byte("{torn")) }); err != nil {
		t.Fatal(err)
	}
	s2, err := New(db)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if r, ok, err := s2.Get("img-1"); err != nil || !ok || r != mem[0] {
		t.Fatalf("after a reopen: %+v, %v, %v; want %+v", r, ok, err, mem[0])
	}
	if _, _, err := s2.Get("img-9"); err == nil || !strings.Contains(err.Error(), "img-9") {
		t.Fatalf("a broken record: %v; want an error naming it", err)
	}
	if _, err := s2.List(); err == nil {
		t.Fatal("List with a broken record: no error")
	}
}
