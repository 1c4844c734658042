package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/agent"
	"github.com/pullwise/pullwise/plugins"
)

func newAgentCmd(state *string) *cobra.Command {
	var o agent.Options
	var logLevel string
	var logJSON bool
	var cpuProfile string
	cmd := &cobra.Command{
		Use:   "agent --config FILE [--state DIR]",
		Short: "Run the agent: apply the configuration and keep it applied",
		Long: `Run the pullwise agent. It applies the configuration file and re-applies it
whenever the file changes (a rejected edit leaves the apps as they were and
is reported by "pullwise status"), serves the local API on DIR/pullwise.sock
(mode 0600) for the other commands, writes the info report to
DIR/status.json after every change, and consults the pull policies when they
ask for it.

On SIGTERM or SIGINT it stops and leaves every app running; started again
with the same state directory it adopts them without restarting them.

With no other setup it uses the built-in "always" policy, an embedded image
store under DIR, and containerd at its usual socket.

With --eve-config the apps come from an EVE controller's EdgeDevConfig:
each app's volumes from ContentTrees on container-registry datastores, its
restart and purge counters, and a refresh whenever a ContentTree's
generation_count changes. The --config file still holds the device
settings and, by app uuid, what EVE has no field for (pull policies,
ports, ...). "pullwise status -o eve" prints the report as EVE's info
messages.`,
		Example: `  pullwise agent --config /etc/pullwise/config.yaml
  pullwise agent --config demo.yaml --state /tmp/pw --containerd /tmp/ctrd/containerd.sock --log-json
  pullwise agent --config /etc/pullwise/config.yaml --eve-config /etc/pullwise/edgedevconfig.json`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.StateDir = *state
			if hclog.LevelFromString(logLevel) == hclog.NoLevel {
				return usagef("--log-level %q: want trace, debug, info, warn or error", logLevel)
			}
			for flag, d := range map[string]time.Duration{"--grace-period": o.GracePeriod, "--link-check-interval": o.LinkCheck} {
				if d < 0 {
					return usagef("%s %v: want a positive duration", flag, d)
				}
			}
			o.Logger = hclog.New(&hclog.LoggerOptions{Name: "pullwise", Level: hclog.LevelFromString(logLevel), JSONFormat: logJSON, Output: os.Stderr})
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			return agent.Run(ctx, o)
		},
	}
	cmd.Flags().StringVar(&cpuProfile, "cpu-profile", "", "write a CPU profile of the agent to this file until it stops (for `go tool pprof`)")
	cmd.Flags().MarkHidden("cpu-profile")
	cmd.Flags().StringVar(&o.ConfigPath, "config", "", "configuration file, YAML or JSON (required)")
	cmd.Flags().StringVar(&o.ControllerURL, "controller", "", "an EVE controller's URL (https://HOST:PORT, API v2, e.g. Adam): the device's configuration is polled from it and its info posted to it; the device certificate to register is STATE/eve/device-cert.pem, made at the first start")
	cmd.Flags().StringVar(&o.ControllerCA, "controller-ca", "", "CA certificate that verifies the controller's TLS certificate (Adam: run/config/root-certificate.pem)")
	cmd.Flags().StringVar(&o.ControllerSigningCert, "controller-signing-cert", "", "the controller's signing certificate, pinned, when it does not chain to --controller-ca (Adam's generated one: run/adam/signing.pem)")
	cmd.Flags().StringVar(&o.ControllerOnboardCert, "controller-onboard-cert", "", "an onboarding certificate: a device the controller does not know registers itself with it and --controller-serial (EVE's onboarding)")
	cmd.Flags().StringVar(&o.ControllerOnboardKey, "controller-onboard-key", "", "the onboarding certificate's private key")
	cmd.Flags().StringVar(&o.ControllerSerial, "controller-serial", "", "the device's serial, for onboarding")
	cmd.Flags().DurationVar(&o.ControllerInterval, "controller-interval", time.Minute, "how often the controller is asked for the configuration (a 304 costs one request)")
	cmd.Flags().StringVar(&o.EVEConfigPath, "eve-config", "", "an EVE EdgeDevConfig (protobuf, or the JSON Adam's `admin device config set` takes): the apps come from it, and --config's apps are overlays of them by uuid (docs/eve.md)")
	cmd.Flags().StringVar(&o.ContainerdSocket, "containerd", agent.DefaultContainerd, "containerd's socket")
	cmd.Flags().StringVar(&o.Namespace, "namespace", agent.DefaultNamespace, "containerd namespace for the apps")
	cmd.Flags().DurationVar(&o.GracePeriod, "grace-period", 10*time.Second, "an app that exits this soon after an image change is rolled back (if its policy says so)")
	cmd.Flags().DurationVar(&o.LogCheck, "log-check-interval", 30*time.Second, "how often app log sizes are checked against device.logs")
	cmd.Flags().DurationVar(&o.ReleaseModulesAfter, "release-modules-after", time.Minute, "release a policy module no decision used for this long (its compiled code and warm instance: most of an idle agent's memory); its next decision compiles it again from the module cache in tens of milliseconds; 0 keeps every module loaded")
	cmd.Flags().DurationVar(&o.LinkCheck, "link-check-interval", 5*time.Second, "how often the uplink is looked at for changes: a download whose policy no longer accepts the link is paused, and apps waiting for a next check are asked again")
	cmd.Flags().Int64Var(&o.MaxModuleSize, "max-module-size", plugins.DefaultMaxModuleSize, "largest policy module file accepted, in bytes")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	cmd.Flags().BoolVar(&logJSON, "log-json", false, "log in JSON")
	_ = cmd.MarkFlagRequired("config")
	return cmd
}

// clientContext bounds a CLI request that does not wait for an action.
func clientContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), 30*time.Second)
}
