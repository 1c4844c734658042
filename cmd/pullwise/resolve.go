package main

import (
	"errors"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/pullwise/pullwise/host/registry"
)

func newResolveCmd() *cobra.Command {
	var f registryFlags
	var platform string
	var output *output
	cmd := &cobra.Command{
		Use:   "resolve REF",
		Short: "Print the digests a reference names now, downloading nothing",
		Long: `Ask the registry what REF names: one HEAD request when the registry sends
Docker-Content-Digest (a GET of the manifest otherwise), plus a GET of the
index for a multi-arch tag. No blobs are downloaded.

The resolved SHA is the digest of the manifest for the device's platform,
which is what pullwise latches and reports; for a multi-arch tag the index
digest is printed too. Credentials come from the Docker config
(~/.docker/config.json and its credential helpers).

The registry is reached over HTTPS only, loopback and private addresses
included, unless --insecure is given (then over plain HTTP only): the same
rule the agent applies with device.insecureRegistries. Mirrors, CA and client
certificates come from --hosts-dir in containerd's certs.d layout
(HOST[_PORT_]/hosts.toml, ca.crt), as for the agent's pulls.`,
		Example: `  pullwise resolve docker.io/library/ubuntu:latest
  pullwise resolve --platform linux/arm64 -o json ubuntu:24.04
  pullwise resolve --insecure localhost:5000/demo/app:latest
  pullwise resolve --hosts-dir /etc/pullwise/certs.d registry.lan:5000/app:1`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := output.check(); err != nil {
				return err
			}
			var opts []registry.Option
			if platform != "" {
				p, err := v1.ParsePlatform(platform)
				if err != nil {
					return fmt.Errorf("--platform %q: %w", platform, err)
				}
				opts = append(opts, registry.WithPlatform(*p))
			}
			c, err := f.client(args[0], opts...)
			if err != nil {
				return err
			}
			res, err := c.Resolve(cmd.Context(), args[0], nil)
			if err != nil {
				return fmt.Errorf("%w%s", err, hint(err, f.insecure))
			}
			out := cmd.OutOrStdout()
			switch {
			case output.structured():
				return output.print(out, res)
			default:
				fmt.Fprintf(out, "reference:   %s\ndigest:      %s\n", res.Ref, res.Digest)
				if res.IndexDigest != "" {
					fmt.Fprintf(out, "index:       %s\nplatform:    %s\n", res.IndexDigest, res.Platform)
				}
				fmt.Fprintf(out, "media type:  %s\n", res.MediaType)
				return nil
			}
		},
	}
	f.register(cmd)
	cmd.Flags().StringVar(&platform, "platform", "", "platform to pick from a multi-arch index (default linux/<this machine's arch>)")
	output = addOutput(cmd, "text", "json", "yaml")
	return cmd
}

// hint says what to do next for the failures a person can act on.
func hint(err error, insecure bool) string {
	if errors.Is(err, registry.ErrUnreachable) && insecure {
		return ""
	}
	if h := registry.Hint(err, "add --insecure"); h != "" {
		return "\n  hint: " + h
	}
	return ""
}
