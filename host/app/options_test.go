package app

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/pullwise/pullwise/host/imagestore"
)

// TestNewRefuses: a Host without a required collaborator, or with an
// option given a value that cannot work, is not made, and the error names
// what is wrong.
func TestNewRefuses(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	images, err := imagestore.New(db)
	if err != nil {
		t.Fatal(err)
	}
	all := func(extra ...Option) []Option {
		return append([]Option{WithRegistry(&fakeRegistry{}), WithPuller(&fakePuller{}), WithImages(images),
			WithContainers(&fakeContainers{}), WithPolicies(&Catalog{})}, extra...)
	}
	for _, tc := range []struct {
		name string
		db   *bolt.DB
		opts []Option
		want string
	}{
		{"nothing", db, nil, "WithRegistry"},
		{"no state file", nil, all(), "a state file"},
		{"nil images", db, all(WithImages(nil)), "WithImages: nil"},
		{"made", db, all(), ""},
		{"negative grace period", db, all(WithGracePeriod(-time.Second)), "WithGracePeriod: -1s is not positive"},
		{"zero link check", db, all(WithLinkCheck(0)), "WithLinkCheck"},
		{"nil clock", db, all(WithClock(nil)), "WithClock: nil"},
		{"typed nil registry", db, all(WithRegistry((*fakeRegistry)(nil))), "WithRegistry: nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(context.Background(), tc.db, tc.opts...)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				h.Close()
				return
			}
			if err == nil {
				h.Close()
				t.Fatal("made")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v; want it to name %q", err, tc.want)
			}
		})
	}
}
