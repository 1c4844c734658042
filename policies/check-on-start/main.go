// Command check-on-start is the design note's alternate proposal as its own
// option: check the manifest every time the app starts (create, start, boot,
// refresh) and pull only if it changed. The manifest is a few hundred bytes,
// so a start costs one request. If the registry cannot be reached the app
// starts on the image it has: a start must not depend on the network.
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
			return sdk.UseLocal("check or pull failed (" + in.LastError + "); starting on the image on disk"), nil
		}
		return sdk.RetryLater(in, 10*time.Second, 300*time.Second), nil
	case sdk.EventStartFailed:
		return sdk.Decision{Action: sdk.ActionRollback, Reason: "app failed to start on the new image; rolling back to the previous one"}, nil
	case sdk.EventTick:
		if in.Image.Satisfied() {
			return sdk.UseLocal("check-on-start checks only when the app starts"), nil
		}
	}
	return sdk.Converge(in.Image, sdk.PullFailureKeepExisting), nil
}
