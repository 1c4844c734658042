package app

import (
	"context"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/containers"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/host/imagestore"
	"github.com/pullwise/pullwise/host/pull"
	"github.com/pullwise/pullwise/host/registry"
)

// What the reconciler needs of the host's other parts, as it uses them:
// small interfaces, so the counter and deferral rules are tested with fast
// fakes (rules_test.go) as well as against a real containerd and registry
// (the other tests). *registry.Client, *pull.Puller and
// *containers.Manager are the real ones.

// Registry answers what references name.
type Registry interface {
	Resolve(ctx context.Context, ref string, prev *registry.Resolution) (registry.Resolution, error)
	ParseReference(ref string) (name.Reference, error)
}

// Puller brings images into containerd and says what it holds.
type Puller interface {
	// Local and Named report what containerd holds under a name (Named
	// skips the unpack check, for an image a container was built from).
	Local(ctx context.Context, imageName string) (pull.Result, bool)
	Named(ctx context.Context, imageName string) (pull.Result, bool)
	Pull(ctx context.Context, res registry.Resolution, want imagedigest.Digest, progress func(pull.Progress)) (pull.Result, error)
	// Name is the containerd name of an image pulled from ref: the
	// repository at the top digest (the index, for a multi-arch tag).
	Name(ref string, d imagedigest.Pair) (string, error)
	Tag(ctx context.Context, ref string, res pull.Result) error
	TagName(ref string) string
	Alias(ctx context.Context, from, to string) error
	Has(ctx context.Context, digest imagedigest.Digest) bool
	// Manifest fetches the platform manifest a resolution names (for the
	// download estimate) and keeps it for the pull that may follow.
	Manifest(ctx context.Context, res registry.Resolution) (*v1.Manifest, error)
	Size(ctx context.Context, imageName string) (int64, error)
	Collect(ctx context.Context, store *imagestore.Store) ([]string, error)
	// Need says what pulling the image of a manifest needs beyond what
	// containerd holds; FreeDisk what containerd's root has free.
	Need(ctx context.Context, m *v1.Manifest) pull.Need
	FreeDisk(ctx context.Context) (free int64, root string, err error)
}

// Containers runs the apps' containers.
type Containers interface {
	// StopTimeout is how long a stopping process is given before SIGKILL.
	StopTimeout() time.Duration
	// Probe runs one health probe of the app; nil is healthy.
	Probe(ctx context.Context, id string, p config.Probe) error
	// ImageHealthcheck is the app's root image's HEALTHCHECK, nil if none.
	ImageHealthcheck(ctx context.Context, id string) (*config.Healthcheck, error)
	Status(ctx context.Context, id string) (containers.Status, error)
	Create(ctx context.Context, s containers.Spec) error
	Start(ctx context.Context, id string) error
	Restart(ctx context.Context, id string) error
	Replace(ctx context.Context, s containers.Spec) error
	Purge(ctx context.Context, s containers.Spec) error
	Remove(ctx context.Context, id string) error
	Wait(ctx context.Context, id string) (<-chan uint32, error)
}

var (
	_ Registry   = (*registry.Client)(nil)
	_ Puller     = (*pull.Puller)(nil)
	_ Containers = (*containers.Manager)(nil)
)
