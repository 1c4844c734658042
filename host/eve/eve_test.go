package eve

import (
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"
	"testing"

	evecfg "github.com/lf-edge/eve-api/go/config"
	"github.com/lf-edge/eve-api/go/evecommon"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/imagedigest"
)

const (
	appA  = "0a7c3b1e-0000-4000-8000-00000000000a"
	appB  = "0a7c3b1e-0000-4000-8000-00000000000b"
	treeW = "6f1e0c1e-0000-4000-8000-000000000001"
)

// devConfig is an EdgeDevConfig as Adam's JSON: two apps on one
// ContentTree, each with a blank volume.
func devConfig(gen int64, restart uint32) *evecfg.EdgeDevConfig {
	j := `{
  "datastores": [{"id": "ds1", "dType": "DsContainerRegistry", "fqdn": "docker://registry.example:5000", "dpath": "acme"}],
  "contentInfo": [{"uuid": "` + treeW + `", "dsId": "ds1", "URL": "web:latest", "iformat": "CONTAINER", "generation_count": "` + itoa(gen) + `"}],
  "volumes": [
    {"uuid": "v-img", "origin": {"type": "VCOT_DOWNLOAD", "downloadContentTreeID": "` + treeW + `"}},
    {"uuid": "v-data", "origin": {"type": "VCOT_BLANK"}}
  ],
  "apps": [
    {"uuidandversion": {"uuid": "` + appA + `", "version": "1"}, "displayname": "web", "activate": true,
     "restart": {"counter": ` + itoa(int64(restart)) + `},
     "volumeRefList": [{"uuid": "v-img"}, {"uuid": "v-data", "mount_dir": "/data"}]},
    {"uuidandversion": {"uuid": "` + appB + `", "version": "1"}, "displayname": "api", "activate": true,
     "volumeRefList": [{"uuid": "v-img"}]}
  ],
  "configItems": [{"key": "pullwise.pull.policy", "value": "periodic"}]
}`
	c, err := Parse([]byte(j))
	if err != nil {
		panic(err)
	}
	return c
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestTranslate: the mapping of docs/eve.md, and generation_count as every
// using app's refresh counter.
func TestTranslate(t *testing.T) {
	overlay := &config.Config{Apps: []config.App{{UUID: appA, PullPolicy: &config.PolicyRef{Name: "always"}, Ports: []string{"8080:80"}}}}
	gens := &Generations{Trees: map[string]int64{}, Refresh: map[string]int64{}}
	tr := Translate(devConfig(0, 2), overlay, gens)
	if len(tr.Rejected) != 0 || len(tr.Apps) != 2 {
		t.Fatalf("%+v", tr)
	}
	web := tr.Apps[0]
	if web.DisplayName != "web" || web.Restart.Counter != 2 || web.RefreshImage.Counter != 0 || len(web.Drives) != 2 ||
		web.Drives[0].Image.Name != "registry.example:5000/acme/web:latest" || web.Drives[0].Image.UUID != treeW ||
		web.Drives[1].Kind != config.DriveVolume || web.Drives[1].MountPath != "/data" {
		t.Fatalf("web: %+v", web)
	}
	if web.PullPolicy == nil || web.PullPolicy.Name != "always" || len(web.Ports) != 1 {
		t.Fatalf("the overlay's fields are not on web: %+v", web)
	}
	if tr.Policy == nil || tr.Policy.Name != "periodic" {
		t.Fatalf("configItems policy: %+v", tr.Policy)
	}
	// The same generation: nothing asked. A new one: both apps refresh once.
	if tr := Translate(devConfig(0, 2), overlay, gens); tr.Apps[0].RefreshImage.Counter != 0 || tr.Apps[1].RefreshImage.Counter != 0 {
		t.Fatalf("no change bumped: %+v", tr.Apps)
	}
	if tr := Translate(devConfig(1, 2), overlay, gens); tr.Apps[0].RefreshImage.Counter != 1 || tr.Apps[1].RefreshImage.Counter != 1 {
		t.Fatalf("a generation change: %+v", tr.Apps)
	}
	if tr := Translate(devConfig(1, 2), overlay, gens); tr.Apps[0].RefreshImage.Counter != 1 {
		t.Fatalf("the same generation again: %+v", tr.Apps)
	}
	if tr := Translate(devConfig(0, 2), overlay, gens); tr.Apps[0].RefreshImage.Counter != 2 {
		t.Fatalf("a count that went down is a change too (EVE acts on a count that differs): %+v", tr.Apps)
	}
}

// TestUnmappableAppsAloneAreRejected: an app that cannot be mapped is
// rejected with its EVE field named; the others are not affected.
func TestUnmappableAppsAloneAreRejected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(*evecfg.EdgeDevConfig)
		field string
	}{
		{"halted", func(c *evecfg.EdgeDevConfig) { c.Apps[1].Activate = false }, "apps[1].activate"},
		{"unknown volume", func(c *evecfg.EdgeDevConfig) { c.Apps[1].VolumeRefList[0].Uuid = "nope" }, "apps[1].volumeRefList[0].uuid"},
		{"encrypted datastore", func(c *evecfg.EdgeDevConfig) {
			c.Datastores = append(c.Datastores, &evecfg.DatastoreConfig{Id: "ds2", DType: evecfg.DsType_DsContainerRegistry, Fqdn: "docker://x", CipherData: &evecommon.CipherBlock{}})
			c.ContentInfo = append(c.ContentInfo, &evecfg.ContentTree{Uuid: "t2", DsId: "ds2", URL: "a:b", Iformat: evecfg.Format_CONTAINER})
			c.Volumes = append(c.Volumes, &evecfg.Volume{Uuid: "v2", Origin: &evecfg.VolumeContentOrigin{Type: evecfg.VolumeContentOriginType_VCOT_DOWNLOAD, DownloadContentTreeID: "t2"}})
			c.Apps[1].VolumeRefList[0].Uuid = "v2"
		}, "apps[1].volumeRefList[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := devConfig(0, 0)
			tc.edit(c)
			tr := Translate(c, &config.Config{}, &Generations{Trees: map[string]int64{}, Refresh: map[string]int64{}})
			err := tr.Rejected[appB]
			if err == nil || len(tr.Rejected) != 1 {
				t.Fatalf("rejected %v, want api alone", tr.Rejected)
			}
			if fe := config.FieldErrors(err); len(fe) != 1 || fe[0].Field != tc.field {
				t.Fatalf("error %v, want field %s", err, tc.field)
			}
			if len(tr.Apps[0].Drives) != 2 {
				t.Fatalf("web was affected: %+v", tr.Apps[0])
			}
		})
	}
}

func TestParseRefusesEmptyAndGarbage(t *testing.T) {
	for _, b := range []string{"", "  \n", "{not json", "\x01\x02\x03garbage"} {
		if _, err := Parse([]byte(b)); err == nil {
			t.Errorf("%q parsed", b)
		}
	}
}

// TestInfo: a loaded tree reports 100 %, a downloading one its bytes
// (99 % at most), and each volume follows its app: created once the app
// runs on it, in error while the app failed with nothing running.
func TestInfo(t *testing.T) {
	gens := &Generations{Trees: map[string]int64{}, Refresh: map[string]int64{}}
	Translate(devConfig(0, 0), &config.Config{}, gens)
	sha := imagedigest.Digest("sha256:" + strings.Repeat("a", 64))
	tests := []struct {
		name     string
		info     app.Info
		trees    map[string]string // app -> state and progress
		volumes  map[string]string // volume -> state
		volumErr bool
	}{
		{"web runs, api downloads",
			app.Info{Apps: []app.AppInfo{
				{UUID: appA, State: app.StateRunning, Running: map[string]app.RunImage{treeW: {Pair: imagedigest.Pair{Digest: sha}}}},
				{UUID: appB, State: app.StateDownloading}},
				Images: []app.ImageInfo{
					{ImageObjectID: treeW, App: appA, SHA256: sha},
					{ImageObjectID: treeW, App: appB, Download: &app.DownloadProgress{DoneBytes: 50, TotalBytes: 200}}}},
			map[string]string{appA: "LOADED 100", appB: "DOWNLOAD_STARTED 25"},
			map[string]string{"v-img": "CREATED_VOLUME", "v-data": "CREATED_VOLUME"}, false},
		{"web failed before it ran",
			app.Info{Apps: []app.AppInfo{{UUID: appA, State: app.StateError, LastError: "no such image"}, {UUID: appB, State: app.StateResolving}},
				Images: []app.ImageInfo{{ImageObjectID: treeW, App: appA}, {ImageObjectID: treeW, App: appB}}},
			map[string]string{appA: "INITIAL 0", appB: "RESOLVING_TAG 0"},
			map[string]string{"v-img": "ERROR", "v-data": "ERROR"}, true},
	}
	for _, tc := range tests {
		trees, vols := map[string]string{}, map[string]string{}
		i := 0
		for _, m := range Info(tc.info, "dev", gens) {
			if ct := m.GetCinfo(); ct != nil {
				trees[tc.info.Images[i].App] = fmt.Sprintf("%s %d", ct.GetState(), ct.GetProgressPercentage())
				i++
			}
			if v := m.GetVinfo(); v != nil {
				vols[v.GetUuid()] = v.GetState().String()
				if (v.GetVolumeErr() != nil) != tc.volumErr {
					t.Errorf("%s: volume %s error %v", tc.name, v.GetUuid(), v.GetVolumeErr())
				}
			}
		}
		if !maps.Equal(trees, tc.trees) || !maps.Equal(vols, tc.volumes) {
			t.Errorf("%s: trees %v, volumes %v; want %v, %v", tc.name, trees, vols, tc.trees, tc.volumes)
		}
	}
}

// TestExampleConfig: the README's example EdgeDevConfig (Adam's JSON form)
// parses and maps to one app with no part rejected.
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile("../../examples/eve/edgedevconfig.json")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	gens := &Generations{Trees: map[string]int64{}, Refresh: map[string]int64{}}
	tr := Translate(c, &config.Config{}, gens)
	if len(tr.Rejected) != 0 || len(tr.Apps) != 1 || tr.Apps[0].Drives[0].Image.Name != "docker.io/library/nginx:latest" ||
		tr.Policy == nil || tr.Policy.Name != "always" || len(gens.Volumes) != 2 {
		t.Fatalf("the example: %+v, rejected %v, volumes %v", tr.Apps, tr.Rejected, gens.Volumes)
	}
}
