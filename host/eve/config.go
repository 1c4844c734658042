// Package eve speaks EVE's controller API (lf-edge/eve-api): it reads an
// EdgeDevConfig (protobuf binary, or the JSON form Adam's `admin device
// config set` takes) into pullwise's configuration, and writes what the
// agent reports as EVE's ZInfoMsg (ZInfoApp, ZInfoContentTree).
//
// The mapping is docs/eve.md's table. EVE has no field for what pullwise
// adds (pull policies per app, insecure registries, links, budgets, policy
// modules): those stay in the YAML configuration, whose apps are overlays
// keyed by app uuid. A ContentTree's generation_count change is the design
// note's refreshImage for every app that uses the tree (docs/RATIONALE.md,
// "EVE's generation_count is the refresh counter").
package eve

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	evecfg "github.com/lf-edge/eve-api/go/config"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/registry"
)

// PolicyKey is the configItems key whose value is the device's default pull
// policy (a built-in name or a drop-in module's), as the controller sets it.
const PolicyKey = "pullwise.pull.policy"

// Read reads an EdgeDevConfig file: protobuf binary, or protojson (what
// Adam stores and `adam admin device config set` takes). An empty file is
// an error, not a configuration without apps (a controller's client may
// be rewriting it).
func Read(path string) (*evecfg.EdgeDevConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the EVE configuration: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes an EdgeDevConfig from protojson or protobuf binary.
func Parse(b []byte) (*evecfg.EdgeDevConfig, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, errors.New("empty EVE configuration (nothing is changed)")
	}
	c := &evecfg.EdgeDevConfig{}
	if t[0] == '{' {
		if err := protojson.Unmarshal(t, c); err != nil {
			return nil, fmt.Errorf("not an EdgeDevConfig in JSON: %w", err)
		}
		return c, nil
	}
	if err := proto.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("not an EdgeDevConfig (protobuf binary or JSON): %w", err)
	}
	return c, nil
}

// Translated is an EdgeDevConfig as pullwise configuration.
type Translated struct {
	// Apps are EVE's apps with the overlay's fields; an app that could not
	// be mapped is here with its uuid and name alone, and its error in
	// Rejected.
	Apps     []config.App
	Rejected map[string]error
	// Insecure are the registries datastores name with http:// (reached
	// over plain HTTP, as device.insecureRegistries).
	Insecure []string
	// Policy is the device default pull policy the configItems set (nil:
	// none).
	Policy *config.PolicyRef
	// Trees are the ContentTrees the apps use, by uuid: for the info.
	Trees map[string]*evecfg.ContentTree
	// Credentials are the datastores' apiKey and password, by registry
	// host.
	Credentials map[string]registry.Basic
}

// Translate maps c to pullwise's apps. overlay's apps, by uuid, give what
// EVE has no field for; gens turns ContentTree generation_count changes
// into refresh counters (and is updated: the caller saves it).
func Translate(c *evecfg.EdgeDevConfig, overlay *config.Config, gens *Generations) Translated {
	t := Translated{Rejected: map[string]error{}, Trees: map[string]*evecfg.ContentTree{}, Credentials: map[string]registry.Basic{}}
	stores := map[string]*evecfg.DatastoreConfig{}
	for _, d := range c.GetDatastores() {
		stores[d.GetId()] = d
	}
	trees := map[string]*evecfg.ContentTree{}
	for _, ct := range c.GetContentInfo() {
		trees[ct.GetUuid()] = ct
	}
	vols := map[string]*evecfg.Volume{}
	for _, v := range c.GetVolumes() {
		vols[v.GetUuid()] = v
	}
	for _, item := range c.GetConfigItems() {
		if item.GetKey() == PolicyKey && item.GetValue() != "" {
			t.Policy = &config.PolicyRef{Name: item.GetValue()}
		}
	}
	insecure := map[string]bool{}
	usedBy := map[string][]string{}
	appVols := map[string]Volume{}
	for i, ai := range c.GetApps() {
		uuid := ai.GetUuidandversion().GetUuid()
		app := config.App{UUID: uuid, DisplayName: ai.GetDisplayname()}
		if ov, ok := overlay.App(uuid); ok {
			app = overlaid(app, ov)
		}
		app.Restart.Counter = int64(ai.GetRestart().GetCounter())
		app.Purge.Counter = int64(ai.GetPurge().GetCounter())
		field := fmt.Sprintf("apps[%d]", i)
		var used []string
		err := func() error {
			if !ai.GetActivate() {
				return fieldErr(field+".activate", "false: halting an app is not supported yet; the app is left as it was")
			}
			if ai.GetCipherData() != nil {
				return fieldErr(field+".cipherData", "encrypted app configuration is not supported; the app is left as it was")
			}
			if len(ai.GetVolumeRefList()) == 0 {
				return fieldErr(field+".volumeRefList", "no volumes: an app's image comes from a volume whose origin is a ContentTree (drives is deprecated)")
			}
			for j, ref := range ai.GetVolumeRefList() {
				f := fmt.Sprintf("%s.volumeRefList[%d]", field, j)
				v, ok := vols[ref.GetUuid()]
				if !ok {
					return fieldErr(f+".uuid", "no volume %q in the configuration's volumes", ref.GetUuid())
				}
				if _, seen := appVols[v.GetUuid()]; !seen { // reported with the first app using it
					vol := Volume{Name: v.GetDisplayName(), App: uuid, Generation: v.GetGenerationCount()}
					if v.GetOrigin().GetType() == evecfg.VolumeContentOriginType_VCOT_DOWNLOAD {
						vol.Tree = v.GetOrigin().GetDownloadContentTreeID()
					}
					appVols[v.GetUuid()] = vol
				}
				switch v.GetOrigin().GetType() {
				case evecfg.VolumeContentOriginType_VCOT_BLANK:
					mount := ref.GetMountDir()
					if mount == "" {
						mount = "/data/" + ref.GetUuid()
					}
					app.Drives = append(app.Drives, config.Drive{Kind: config.DriveVolume, MountPath: mount})
				case evecfg.VolumeContentOriginType_VCOT_DOWNLOAD:
					ct, ok := trees[v.GetOrigin().GetDownloadContentTreeID()]
					if !ok {
						return fieldErr(f, "volume %s: no ContentTree %q in contentInfo", v.GetUuid(), v.GetOrigin().GetDownloadContentTreeID())
					}
					ref2, http, err := reference(ct, stores)
					if err != nil {
						return fieldErr(f, "ContentTree %s: %v", ct.GetUuid(), err)
					}
					if ds := stores[ct.GetDsId()]; ds.GetApiKey() != "" || ds.GetPassword() != "" {
						t.Credentials[strings.SplitN(ref2, "/", 2)[0]] = registry.Basic{Username: ds.GetApiKey(), Password: ds.GetPassword()}
					}
					if http != "" {
						insecure[http] = true
					}
					d := config.Drive{Kind: config.DriveContainer, Image: &config.Image{UUID: ct.GetUuid(), Name: ref2, SHA256: ct.GetSha256()}}
					if len(used) > 0 {
						d.MountPath = ref.GetMountDir()
					}
					app.Drives = append(app.Drives, d)
					used = append(used, ct.GetUuid())
					t.Trees[ct.GetUuid()] = ct
				default:
					return fieldErr(f, "volume %s: origin type %s is not supported (want BLANK or DOWNLOAD)", v.GetUuid(), v.GetOrigin().GetType())
				}
			}
			if len(used) == 0 {
				return fieldErr(field+".volumeRefList", "no volume comes from a container image (a ContentTree on a container registry)")
			}
			return nil
		}()
		// A rejected app's trees count too: a refresh asked while its part
		// is rejected is carried by its counter until the part is mended.
		usedBy[uuid] = used
		if err != nil {
			t.Rejected[uuid] = err
			app = config.App{UUID: uuid, DisplayName: ai.GetDisplayname()}
		}
		t.Apps = append(t.Apps, app)
	}
	gens.noteVolumes(appVols)
	counters := gens.apply(usedBy, t.Trees)
	for i := range t.Apps {
		if _, rejected := t.Rejected[t.Apps[i].UUID]; !rejected {
			t.Apps[i].RefreshImage.Counter = counters[t.Apps[i].UUID]
		}
	}
	for h := range insecure {
		t.Insecure = append(t.Insecure, h)
	}
	return t
}

// reference is a ContentTree's image reference: the datastore's host,
// its dpath, and the tree's URL. A datastore named http://HOST is a
// registry reached over plain HTTP (returned as http).
func reference(ct *evecfg.ContentTree, stores map[string]*evecfg.DatastoreConfig) (ref, http string, err error) {
	if ct.GetIformat() != evecfg.Format_CONTAINER {
		return "", "", fmt.Errorf("format %s: only CONTAINER images run", ct.GetIformat())
	}
	ds, ok := stores[ct.GetDsId()]
	if !ok {
		return "", "", fmt.Errorf("no datastore %q", ct.GetDsId())
	}
	if ds.GetDType() != evecfg.DsType_DsContainerRegistry {
		return "", "", fmt.Errorf("datastore %s is %s, not a container registry", ds.GetId(), ds.GetDType())
	}
	if ds.GetCipherData() != nil {
		return "", "", fmt.Errorf("datastore %s: encrypted credentials (cipherData) are not supported; give apiKey and password, or credentials in the device's docker config", ds.GetId())
	}
	host := ds.GetFqdn()
	for _, scheme := range []string{"docker://", "oci://", "https://"} {
		host = strings.TrimPrefix(host, scheme)
	}
	if h, ok := strings.CutPrefix(host, "http://"); ok {
		host, http = h, h
	}
	host = strings.TrimSuffix(host, "/")
	if host == "" {
		return "", "", fmt.Errorf("datastore %s has no fqdn", ds.GetId())
	}
	parts := []string{host}
	if p := strings.Trim(ds.GetDpath(), "/"); p != "" {
		parts = append(parts, p)
	}
	url := strings.Trim(ct.GetURL(), "/")
	if url == "" {
		return "", "", errors.New("no URL (the image's repository and tag)")
	}
	return strings.Join(append(parts, url), "/"), http, nil
}

// overlaid is app with what the overlay says and EVE has no field for.
func overlaid(app, ov config.App) config.App {
	app.PullPolicy, app.Command, app.Env, app.RestartOnExit = ov.PullPolicy, ov.Command, ov.Env, ov.RestartOnExit
	app.Network, app.Ports, app.Limits, app.ReadOnlyRootfs = ov.Network, ov.Ports, ov.Limits, ov.ReadOnlyRootfs
	app.User, app.UserNS = ov.User, ov.UserNS
	app.StopSignal, app.StopTimeout, app.Devices, app.Binds = ov.StopSignal, ov.StopTimeout, ov.Devices, ov.Binds
	if app.DisplayName == "" {
		app.DisplayName = ov.DisplayName
	}
	return app
}

func fieldErr(field, format string, args ...any) error {
	return &config.FieldError{Field: field, Message: fmt.Sprintf(format, args...)}
}
