package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/pullwise/pullwise/host/registry"
	"github.com/pullwise/pullwise/internal/testing/regtest"
)

func TestResolve(t *testing.T) {
	host := regtest.NewRegistry(t)
	want := regtest.PushImage(t, host+"/demo/app:latest", regtest.RandomImage(t, 1024, 2))
	out, err := run(t, "", "resolve", "--insecure", "-o", "json", host+"/demo/app:latest")
	if err != nil {
		t.Fatal(err, out)
	}
	var res registry.Resolution
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Digest.String() != want.String() {
		t.Fatalf("%s: %+v %v", out, res, err)
	}
	idx, per := regtest.PushIndex(t, host+"/demo/multi:1", "linux/amd64", "linux/arm64")
	out, err = run(t, "", "resolve", "--insecure", "--platform", "linux/arm64", host+"/demo/multi:1")
	if err != nil || !strings.Contains(out, "index:       "+idx.String()) || !strings.Contains(out, "digest:      "+per["linux/arm64"].String()) {
		t.Fatalf("index: %v\n%s", err, out)
	}
	_, err = run(t, "", "resolve", "--insecure", host+"/demo/app:nope")
	if !errors.Is(err, registry.ErrNotFound) || !strings.Contains(err.Error(), "hint: check the repository and tag") {
		t.Fatalf("unknown tag: %v", err)
	}
}
