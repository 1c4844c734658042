// Package version says what build of pullwise is running, from the Go
// build information: the module version (or "devel"), the VCS commit and
// time, the Go toolchain and the versions of the libraries that talk to the
// outside (the containerd client, wazero, go-containerregistry).
package version

import (
	"runtime"
	"runtime/debug"
)

// Info is a build's identity.
type Info struct {
	Version        string `json:"version"`
	Commit         string `json:"commit,omitempty"`
	CommitTime     string `json:"commitTime,omitempty"`
	Modified       bool   `json:"modified,omitempty"`
	Go             string `json:"go"`
	Platform       string `json:"platform"`
	Containerd     string `json:"containerdClient,omitempty"`
	Wazero         string `json:"wazero,omitempty"`
	ContainerRegis string `json:"goContainerregistry,omitempty"`
}

// stamped is the version `make build` gives the binary from git (`git
// describe`), set at link time (-ldflags -X): it names the build where the
// Go toolchain's own VCS stamping is off or has no module version.
var stamped string

// Get reads this binary's build information.
func Get() Info {
	i := Info{Version: "devel", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if stamped != "" {
			i.Version = stamped
		}
		return i
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		i.Version = v
	}
	if stamped != "" {
		i.Version = stamped
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Commit = s.Value
		case "vcs.time":
			i.CommitTime = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	for _, d := range bi.Deps {
		switch d.Path {
		case "github.com/containerd/containerd/v2":
			i.Containerd = d.Version
		case "github.com/tetratelabs/wazero":
			i.Wazero = d.Version
		case "github.com/google/go-containerregistry":
			i.ContainerRegis = d.Version
		}
	}
	return i
}

// String is the one-line form `pullwise --version` prints.
func (i Info) String() string {
	s := "pullwise " + i.Version
	if i.Commit != "" {
		c := i.Commit
		if len(c) > 12 {
			c = c[:12]
		}
		s += " (" + c
		if i.Modified {
			s += ", modified"
		}
		s += ")"
	}
	return s + ", " + i.Go + ", " + i.Platform
}
