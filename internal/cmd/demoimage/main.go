// Command demoimage builds the demo app image (internal/testing/testapp with a
// /version file) and pushes it to a plain-HTTP registry: `make demo` uses it
// to publish a version and then move the tag.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/pullwise/pullwise/internal/testing/regtest"
)

func main() {
	ref := flag.String("ref", "", "where to push, e.g. 127.0.0.1:5000/demo/app:latest (plain HTTP)")
	version := flag.String("version", "v1", "the version the app reports")
	flag.Parse()
	if err := run(*ref, *version); err != nil {
		fmt.Fprintln(os.Stderr, "demoimage:", err)
		os.Exit(1)
	}
}

func run(ref, version string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	img, err := regtest.BuildAppImage(version, false)
	if err != nil {
		return err
	}
	if err := remote.Write(r, img); err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s (%s) as %s\n", version, d, ref)
	return nil
}
