// Command never is the built-in offline policy: local images only. It never
// contacts a registry, and fails the app when its image is absent.
package main

import "github.com/pullwise/pullwise/sdk"

func main() {}

func init() { sdk.Register(sdk.Policy{Decide: decide}) }

func decide(in sdk.Input) (sdk.Decision, error) {
	img := in.Image
	switch {
	case in.Event == sdk.EventStartFailed:
		return sdk.Decision{Action: sdk.ActionRollback, Reason: "app failed to start on the new image; rolling back to the previous one"}, nil
	case !img.Present():
		return sdk.Fail("never: image " + img.Ref + " is not on disk and this policy does not pull"), nil
	case !img.Satisfied():
		return sdk.Fail("never: the image on disk (" + img.LocalDigest + ") is not the pinned digest " + img.PinnedDigest + " and this policy does not pull"), nil
	}
	return sdk.UseLocal("never: using the image on disk; this policy does not contact registries"), nil
}
