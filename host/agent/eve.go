package agent

import (
	"slices"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/host/eve"
)

// fromEVE is the configuration with its apps from the EVE configuration
// (Options.EVEConfigPath) and overlay's settings: what EVE has no field
// for. An EdgeDevConfig that does not parse is an error like a YAML file
// that does not: nothing is changed. An app EVE gives that cannot be
// mapped is rejected alone, its field named.
func (a *Agent) fromEVE(overlay *config.Config) (*config.Config, error) {
	edc, err := eve.Read(a.o.EVEConfigPath)
	if err != nil {
		return nil, err
	}
	gens, err := eve.LoadGenerations(a.o.StateDir)
	if err != nil {
		return nil, err
	}
	t := eve.Translate(edc, overlay, gens)
	// Saved whatever becomes of the configuration: a refresh asked by a
	// generation_count change is kept in the app's counter even while its
	// part is rejected.
	if err := gens.Save(a.o.StateDir); err != nil {
		return nil, err
	}
	a.eveCreds = t.Credentials
	c := overlay.WithApps(a.o.EVEConfigPath, t.Apps, t.Rejected)
	c.Device.InsecureRegistries = slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(c.Device.InsecureRegistries), t.Insecure...))))
	if t.Policy != nil {
		c.Device.PullPolicy = t.Policy // the controller's word over the file's
	}
	for _, ov := range overlay.Apps {
		if _, ok := c.App(ov.UUID); !ok {
			a.log.Warn("the configuration file names an app the EVE configuration does not; in EVE mode the file's apps are overlays of EVE's, so it is not run",
				"uuid", ov.UUID, "name", ov.DisplayName)
		}
	}
	return c, nil
}
