// Package imagestore keeps what pullwise knows about images across restarts:
// for each ImageObjectID, the SHA it resolved to (latched), the reference it
// came from, when it was resolved and last checked. Several ImageObjectIDs
// may resolve to one SHA; the image content itself lives once, in
// containerd's content store, keyed by digest.
//
// The store is buckets in a bbolt file (the agent's one state file, see
// host/statedb): no server to run, and every update is a transaction that
// a power cut either completes or never starts, so the file always opens.
package imagestore

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/imagedigest"
)

var bucketIDs = []byte("image-object-ids")

// Record is one ImageObjectID's latched resolution and check history.
type Record struct {
	// ID is the ImageObjectID (the config's image uuid).
	ID string `json:"id"`
	// Ref is the reference the ID was resolved from.
	Ref string `json:"ref"`
	// Pair is the resolved SHA (the platform manifest's digest) and the
	// multi-arch index's digest, if the tag named one.
	imagedigest.Pair
	// Size is the image's size in bytes (manifest, config and layers).
	Size int64 `json:"size,omitempty"`
	// ResolvedAt is when Digest was latched.
	ResolvedAt time.Time `json:"resolvedAt"`
	// Reason is why it was latched last: see LatchReason.
	Reason LatchReason `json:"reason"`
	// LastCheck, LastCheckResult and LastRemoteDigest describe the last time
	// the registry was asked, whatever the outcome.
	LastCheck        time.Time          `json:"lastCheck,omitzero"`
	LastCheckResult  string             `json:"lastCheckResult,omitempty"`
	LastRemoteDigest imagedigest.Digest `json:"lastRemoteDigest,omitempty"`
	// LastPull is when the image was last downloaded.
	LastPull time.Time `json:"lastPull,omitzero"`
	// PreviousDigest is what Digest was before the last refresh, kept so an
	// app can be rolled back.
	// (Two fields, not a Pair: their names in the file are older than it.)
	PreviousDigest      imagedigest.Digest `json:"previousDigest,omitempty"`
	PreviousIndexDigest imagedigest.Digest `json:"previousIndexDigest,omitempty"`
	// RolledBackFrom is a digest an app was rolled back from because it
	// failed on it: its policy is told (sdk.Image.RolledBackDigest) so the
	// tag is not pulled again while it still names that image. Kept while
	// the latch stays; a refresh or a change to another digest drops it.
	RolledBackFrom imagedigest.Digest `json:"rolledBackFrom,omitempty"`
}

// Previous is what the latch was before the last change, as a pair.
func (r Record) Previous() imagedigest.Pair {
	return imagedigest.Pair{Digest: r.PreviousDigest, IndexDigest: r.PreviousIndexDigest}
}

// LatchReason says what changed a latch. A latch changes only on purpose.
type LatchReason string

const (
	// LatchCreate: first resolution, at app create. Refused if the ID is
	// already latched to another SHA: that would be a silent re-resolution.
	LatchCreate LatchReason = "create"
	// LatchRefresh: the refreshImage counter asked for it.
	LatchRefresh LatchReason = "refresh"
	// LatchPolicy: a policy decision pulled a new image.
	LatchPolicy LatchReason = "policy"
	// LatchRollback: an app went back to its previous image.
	LatchRollback LatchReason = "rollback"
)

// ErrAlreadyLatched is returned by a create-time latch of an ID that already
// resolves to another SHA.
var ErrAlreadyLatched = errors.New("already latched to another SHA")

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// Store is the image store. Safe for concurrent use.
type Store struct {
	db *bolt.DB

	// writing serialises the writes, so the records in memory follow the
	// bucket in the order its transactions committed.
	writing sync.Mutex

	mu     sync.Mutex
	held   map[imagedigest.Digest]int // digests an in-flight refresh involves
	checks map[string]check           // registry checks not yet written, by ID
	// recs is what the bucket holds, decoded once when the store opens and
	// kept in step by Latch and Delete (the store is the bucket's only
	// writer): a report of fifty apps, and every decision's input, read
	// memory instead of decoding every record again. broken are the
	// records that did not decode, reported by Get and List as before.
	recs   map[string]Record
	broken map[string]error
}

// check is a registry check kept in memory until the ID's next write.
type check struct {
	at     time.Time
	remote imagedigest.Digest
	result string
}

// New keeps the store in buckets of its own in db (the agent's state file,
// see host/statedb), which the caller owns: Close leaves it open.
func New(db *bolt.DB) (*Store, error) {
	s := &Store{db: db, held: map[imagedigest.Digest]int{}, checks: map[string]check{},
		recs: map[string]Record{}, broken: map[string]error{}}
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketIDs)
		if err != nil {
			return err
		}
		return b.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				s.broken[string(k)] = err
				return nil
			}
			s.recs[string(k)] = r
			return nil
		})
	}); err != nil {
		return nil, fmt.Errorf("initialising the image store in %s: %w", db.Path(), err)
	}
	return s, nil
}

// Close writes the checks not yet written and closes the store.
func (s *Store) Close() error {
	s.mu.Lock()
	pending := s.checks
	s.checks = map[string]check{}
	s.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIDs)
		for id, c := range pending {
			old := b.Get([]byte(id))
			if old == nil {
				continue
			}
			var r Record
			if err := json.Unmarshal(old, &r); err != nil {
				return err
			}
			c.apply(&r)
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), v); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

func (c check) apply(r *Record) {
	if c.at.After(r.LastCheck) {
		r.LastCheck, r.LastRemoteDigest, r.LastCheckResult = c.at, c.remote, c.result
	}
}

// Get returns the record of an ImageObjectID, with the checks not yet
// written.
func (s *Store) Get(id string) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.broken[id]; err != nil {
		return Record{}, false, fmt.Errorf("reading image %s: %w", id, err)
	}
	r, ok := s.recs[id]
	if ok {
		if c, pending := s.checks[id]; pending {
			c.apply(&r)
		}
	}
	return r, ok, nil
}

// List returns every record, by ID, with the checks not yet written.
func (s *Store) List() ([]Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, err := range s.broken {
		return nil, fmt.Errorf("reading image %s: %w", id, err)
	}
	recs := make([]Record, 0, len(s.recs))
	for id, r := range s.recs {
		if c, pending := s.checks[id]; pending {
			c.apply(&r)
		}
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(a, b Record) int { return strings.Compare(a.ID, b.ID) })
	return recs, nil
}

// Latch sets the SHA an ImageObjectID resolves to. rec.Reason must say why;
// a create-time latch of an ID already latched to another SHA is refused
// with ErrAlreadyLatched. A changed digest keeps the old one as
// PreviousDigest. Check history is kept from the existing record.
func (s *Store) Latch(rec Record) error {
	if rec.ID == "" {
		return errors.New("latch: empty ImageObjectID")
	}
	if !digestRE.MatchString(rec.Digest.String()) {
		return fmt.Errorf("latch %s: digest %q is not a lower-case sha256 digest", rec.ID, rec.Digest)
	}
	if rec.IndexDigest != "" && !digestRE.MatchString(rec.IndexDigest.String()) {
		return fmt.Errorf("latch %s: index digest %q is not a lower-case sha256 digest", rec.ID, rec.IndexDigest)
	}
	switch rec.Reason {
	case LatchCreate, LatchRefresh, LatchPolicy, LatchRollback:
	default:
		return fmt.Errorf("latch %s: reason %q: want create, refresh, policy or rollback", rec.ID, rec.Reason)
	}
	if rec.ResolvedAt.IsZero() {
		rec.ResolvedAt = time.Now().UTC()
	}
	s.writing.Lock()
	defer s.writing.Unlock()
	s.mu.Lock()
	pending, hasCheck := s.checks[rec.ID]
	s.mu.Unlock()
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketIDs)
		if old := b.Get([]byte(rec.ID)); old != nil {
			var prev Record
			if err := json.Unmarshal(old, &prev); err != nil {
				return err
			}
			if prev.Digest != rec.Digest {
				if rec.Reason == LatchCreate {
					return fmt.Errorf("latch %s to %s at create: %w (%s)", rec.ID, rec.Digest, ErrAlreadyLatched, prev.Digest)
				}
				rec.PreviousDigest, rec.PreviousIndexDigest = prev.Digest, prev.IndexDigest
			} else {
				rec.PreviousDigest, rec.PreviousIndexDigest = prev.PreviousDigest, prev.PreviousIndexDigest
				if rec.RolledBackFrom == "" && rec.Reason != LatchRefresh {
					rec.RolledBackFrom = prev.RolledBackFrom
				}
			}
			if rec.LastCheck.IsZero() {
				rec.LastCheck, rec.LastCheckResult, rec.LastRemoteDigest = prev.LastCheck, prev.LastCheckResult, prev.LastRemoteDigest
			}
			if hasCheck {
				pending.apply(&rec)
			}
			if rec.LastPull.IsZero() {
				rec.LastPull = prev.LastPull
			}
		}
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte(rec.ID), v)
	})
	if err == nil {
		s.mu.Lock()
		s.recs[rec.ID] = rec
		delete(s.broken, rec.ID)
		if hasCheck && s.checks[rec.ID] == pending {
			delete(s.checks, rec.ID)
		}
		s.mu.Unlock()
	}
	return err
}

// RecordCheck notes a registry check of an ID without touching its latch.
// The note is kept in memory (Get and List include it) and written with
// the ID's next latch, or when the store closes: a check that found
// nothing new writes nothing, because flash wears. After a power cut the
// recorded last check may be older than the real one, which costs at
// most one check more.
func (s *Store) RecordCheck(id string, at time.Time, remoteDigest imagedigest.Digest, result string) error {
	if _, ok, err := s.Get(id); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("record check of %s: no such image", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[id] = check{at: at, remote: remoteDigest, result: result}
	return nil
}

// Delete forgets an ImageObjectID. Its SHA becomes collectable once no other
// ID refers to it.
func (s *Store) Delete(id string) error {
	s.writing.Lock()
	defer s.writing.Unlock()
	s.mu.Lock()
	delete(s.checks, id)
	s.mu.Unlock()
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketIDs).Delete([]byte(id)) }); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.recs, id)
	delete(s.broken, id)
	s.mu.Unlock()
	return nil
}

// References returns the IDs whose latch or previous latch is digest.
func (s *Store) References(digest imagedigest.Digest) ([]string, error) {
	recs, err := s.List()
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range recs {
		if r.Digest == digest || r.IndexDigest == digest || r.PreviousDigest == digest || r.PreviousIndexDigest == digest {
			ids = append(ids, r.ID)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// Hold marks digests as involved in an in-flight refresh until release is
// called: Collectable never offers them.
func (s *Store) Hold(digests ...imagedigest.Digest) (release func()) {
	s.mu.Lock()
	for _, d := range digests {
		s.held[d]++
	}
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, d := range digests {
				if s.held[d]--; s.held[d] <= 0 {
					delete(s.held, d)
				}
			}
		})
	}
}

// Collectable returns those of the given digests (images on disk) that no
// ImageObjectID refers to, as its latch or its previous latch, and that no
// in-flight refresh holds: the images garbage collection may remove.
func (s *Store) Collectable(onDisk []imagedigest.Digest) ([]imagedigest.Digest, error) {
	recs, err := s.List()
	if err != nil {
		return nil, err
	}
	used := map[imagedigest.Digest]bool{}
	for _, r := range recs {
		used[r.Digest], used[r.IndexDigest], used[r.PreviousDigest], used[r.PreviousIndexDigest] = true, true, true, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []imagedigest.Digest
	for _, d := range onDisk {
		if !used[d] && s.held[d] == 0 {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out, nil
}
