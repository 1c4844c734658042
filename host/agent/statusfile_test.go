package agent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/imagedigest"
	"github.com/pullwise/pullwise/internal/atomicfile"
)

// fleetStatus is a status of n running apps, one image each, shaped as
// the agent reports them.
func fleetStatus(n int, at time.Time) Status {
	st := Status{Agent: AgentStatus{ConfigPath: "/etc/pullwise/config.yaml", DeviceID: "dev-1"},
		Info: app.Info{GeneratedAt: at, Apps: []app.AppInfo{}, Images: []app.ImageInfo{}}}
	d := imagedigest.Digest(fmt.Sprintf("sha256:%064x", 1))
	for i := range n {
		uuid := fmt.Sprintf("0a7c3b1e-0000-4000-8000-%012d", i)
		img := fmt.Sprintf("6f1e0c1e-0000-4000-8000-%012d", i)
		dec := app.DecisionInfo{Policy: "always", Event: "refresh", Action: "use-local", Reason: "registry digest matches the image on disk", At: at}
		st.Info.Apps = append(st.Info.Apps, app.AppInfo{Revision: 1, UUID: uuid, DisplayName: fmt.Sprintf("app-%02d", i),
			State: app.StateRunning, Policy: "always", Counters: app.Counters{RefreshImage: 2},
			Running:   map[string]app.RunImage{img: {Ref: "registry.local/demo/web:latest", Pair: imagedigest.Pair{Digest: d}}},
			Decisions: map[string]app.DecisionInfo{img: dec}})
		st.Info.Images = append(st.Info.Images, app.ImageInfo{ImageObjectID: img, App: uuid, Ref: "registry.local/demo/web:latest",
			SHA256: d, LastCheck: &at, LastCheckResult: "unchanged", Decision: &dec})
	}
	return st
}

// The file is what MarshalIndent of the whole status gives, byte for byte,
// however it was built (whole, or from parts kept since the last write),
// and it is written only when something but a time changed.
func TestStatusFile(t *testing.T) {
	at := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	path := filepath.Join(t.TempDir(), StatusName)
	f := newStatusFile(path)
	check := func(st Status, wantWritten bool, what string) {
		t.Helper()
		written, err := f.write(st)
		if err != nil || written != wantWritten {
			t.Fatalf("%s: written %v, %v; want %v", what, written, err, wantWritten)
		}
		if !written {
			return
		}
		got, _ := os.ReadFile(path)
		want, _ := json.MarshalIndent(st, "", "  ")
		if string(got) != string(want) {
			t.Fatalf("%s: the file differs from MarshalIndent:\n%s\nwant:\n%s", what, got, want)
		}
	}

	st := fleetStatus(3, at)
	check(st, true, "first write")
	check(st, false, "nothing changed")

	later := at.Add(time.Minute)
	st = fleetStatus(3, later)
	for i := range st.Info.Apps {
		st.Info.Apps[i].Revision = 2
	}
	check(st, false, "only the times of a check and its decisions changed")

	st.Info.Apps[1].Revision = 3
	st.Info.Apps[1].Counters.RefreshImage = 3
	check(st, true, "one app's counter")

	st.Info.Apps[2].ConfigError = "apps[2].drives[0].image: invalid reference"
	check(st, true, "a config error, the revision unchanged")

	st.Agent.ConfigError = "device: bad"
	check(st, true, "the agent part")

	st.Info.Images[0].Latched = imagedigest.Digest(fmt.Sprintf("sha256:%064x", 2))
	check(st, true, "another app latched an image this app uses")

	st.Info.Apps = st.Info.Apps[:2]
	st.Info.Images = st.Info.Images[:2]
	check(st, true, "an app removed")

	check(Status{Info: app.Info{GeneratedAt: at, Apps: []app.AppInfo{}, Images: []app.ImageInfo{}}}, true, "no apps")
	f = newStatusFile(path) // (nil and empty lists differ only in the file's text)
	check(Status{Info: app.Info{GeneratedAt: at}}, true, "nil lists")

	// A part whose revision did not move is not built again: the
	// revision is the promise that nothing in it changed.
	st = fleetStatus(3, at)
	check(st, true, "fleet again")
	st.Info.Apps[0].State = "changed without a revision"
	st.Agent.ConfigError = "" // something else changes, so the file is written
	st.Agent.DeviceID = "dev-2"
	if _, err := f.write(st); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); bytes.Contains(got, []byte("changed without a revision")) {
		t.Fatal("an app part was built again although its revision did not move")
	}
}

// BenchmarkStatusFile measures a status write after one app of fifty
// changed: the file built from the parts kept per app, against marshalling
// the whole status twice (the comparison without times, then the file),
// as the agent did before, in the same run.
//
//	go test -run '^$' -bench StatusFile ./host/agent/
func BenchmarkStatusFile(b *testing.B) {
	at := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	b.Run("per-app", func(b *testing.B) {
		f := newStatusFile(filepath.Join(b.TempDir(), StatusName))
		st := fleetStatus(50, at)
		f.write(st)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			st.Info.Apps[7].Revision++
			st.Info.Apps[7].Counters.RefreshImage++
			if _, err := f.write(st); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole", func(b *testing.B) {
		path := filepath.Join(b.TempDir(), StatusName)
		st := fleetStatus(50, at)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			st.Info.Apps[7].Counters.RefreshImage++
			key := st
			key.Info.GeneratedAt = time.Time{}
			key.Info.Apps = append([]app.AppInfo(nil), st.Info.Apps...)
			for j := range key.Info.Apps {
				key.Info.Apps[j] = appKey(key.Info.Apps[j])
			}
			key.Info.Images = make([]app.ImageInfo, len(st.Info.Images))
			for j, im := range st.Info.Images {
				key.Info.Images[j] = imageKey(im)
			}
			json.Marshal(key)
			doc, _ := json.MarshalIndent(st, "", "  ")
			if err := atomicfile.Write(path, doc, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
