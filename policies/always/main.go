// Command always is the built-in default pull policy, as the EVE design note
// defines it: pull when the image is absent; when it is present, one manifest
// check at create and refresh and a pull only if the digest differs. At
// create a failed pull fails the app, even when an older image is on disk; a
// failed refresh leaves the app running on the images it has.
package main

import (
	"time"

	"github.com/pullwise/pullwise/sdk"
)

func main() {}

func init() { sdk.Register(sdk.Policy{Decide: sdk.Budgeted(decide)}) }

// Kubelet's image pull back-off: start at 10 s, double, cap at 300 s.
const (
	backoffBase = 10 * time.Second
	backoffCap  = 300 * time.Second
)

func decide(in sdk.Input) (sdk.Decision, error) {
	switch in.Event {
	case sdk.EventPullFailed:
		return sdk.RetryLater(in, backoffBase, backoffCap), nil
	case sdk.EventStartFailed:
		return sdk.Decision{Action: sdk.ActionRollback, Reason: "app failed to start on the new image; rolling back to the previous one"}, nil
	case sdk.EventCreate:
		return sdk.Converge(in.Image, sdk.PullFailureFail), nil
	case sdk.EventRefresh:
		return sdk.Converge(in.Image, sdk.PullFailureKeepExisting), nil
	}
	// start, boot, tick: the tag was checked at create or refresh; an absent
	// or wrong image is still fetched.
	if !in.Image.Satisfied() {
		return sdk.Converge(in.Image, sdk.PullFailureFail), nil
	}
	return sdk.UseLocal("always checks the registry at create and refresh only; using the image on disk"), nil
}
