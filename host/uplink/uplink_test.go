package uplink

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pullwise/pullwise/internal/testing/nmtest"
)

const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
wwan0	00000000	0100000A	0003	0	0	700	00000000	0	0	0
eth0	00000000	0101A8C0	0003	0	0	100	00000000	0	0	0
eth0	0001A8C0	00000000	0001	0	0	100	00FFFFFF	0	0	0
wlan0	00000000	0101A8C0	0002	0	0	50	00000000	0	0	0
`

func writeTable(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "route")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultRoute(t *testing.T) {
	for _, tc := range []struct{ name, table, want string }{
		{"lowest metric among the default routes that are up", table, "eth0"},
		{"no default route", "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\nlo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DefaultRoute(writeTable(t, tc.table))
			if got != tc.want || (tc.want == "") != (err != nil) {
				t.Fatalf("DefaultRoute = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestNetworkManagerOverDBus: the primary connection's interface and
// NetworkManager's Metered, read from a real dbus-daemon; followed when
// they change; the route when NetworkManager is not asked or not there.
func TestNetworkManagerOverDBus(t *testing.T) {
	nm := nmtest.Start(t, "eth0", nmtest.MeteredGuessNo)
	route := writeTable(t, table)
	w, err := New(WithBus(nm.Address), WithRouteFile(route), WithKeep(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	ctx := context.Background()
	check := func(what string, st State, iface string, metered *bool, source string) {
		t.Helper()
		if st.Interface != iface || st.Source != source || (st.Metered == nil) != (metered == nil) || (metered != nil && *st.Metered != *metered) {
			t.Fatalf("%s: %+v (metered %v), want %s metered %v from %s", what, st, deref(st.Metered), iface, deref(metered), source)
		}
	}
	yes, no := true, false
	check("eth0, guess-no", w.State(ctx), "eth0", &no, "networkmanager")
	nm.Set("wwan0", nmtest.MeteredGuessYes)
	check("wwan0, guess-yes", w.State(ctx), "wwan0", &yes, "networkmanager")
	nm.Set("wwan0", nmtest.MeteredYes)
	check("wwan0, yes", w.State(ctx), "wwan0", &yes, "networkmanager")
	nm.Set("eth0", nmtest.MeteredUnknown)
	check("eth0, unknown", w.State(ctx), "eth0", nil, "networkmanager")
	w.UseNetworkManager(false)
	check("not asked", w.State(ctx), "eth0", nil, "route")

	gone, err := New(WithBus("unix:path="+filepath.Join(t.TempDir(), "none")), WithRouteFile(route), WithKeep(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	defer gone.Close()
	check("no NetworkManager", gone.State(ctx), "eth0", nil, "route")
}

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}
