// Command use-existing is the built-in policy that never contacts the
// registry while the image is on disk. Absent images are pulled. A manual
// refresh (the refreshImage counter) is the operator asking explicitly, so it
// still checks.
package main

import (
	"time"

	"github.com/pullwise/pullwise/sdk"
)

func main() {}

func init() { sdk.Register(sdk.Policy{Decide: sdk.Budgeted(decide)}) }

func decide(in sdk.Input) (sdk.Decision, error) {
	switch in.Event {
	case sdk.EventPullFailed:
		if in.Image.Satisfied() {
			return sdk.UseLocal("check or pull failed (" + in.LastError + "); staying on the image on disk"), nil
		}
		return sdk.RetryLater(in, 10*time.Second, 300*time.Second), nil
	case sdk.EventStartFailed:
		return sdk.Decision{Action: sdk.ActionRollback, Reason: "app failed to start on the new image; rolling back to the previous one"}, nil
	case sdk.EventRefresh:
		// Falling back keeps the app running when the registry cannot be reached.
		return sdk.Converge(in.Image, sdk.PullFailureKeepExisting), nil
	}
	if in.Image.Satisfied() {
		return sdk.UseLocal("use-existing: image is on disk; not contacting the registry"), nil
	}
	return sdk.Converge(in.Image, sdk.PullFailureFail), nil
}
