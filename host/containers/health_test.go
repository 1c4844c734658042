package containers

import (
	"reflect"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/pullwise/pullwise/host/config"
)

func TestFromDocker(t *testing.T) {
	tests := []struct {
		name string
		in   *v1.HealthConfig
		want *config.Healthcheck
	}{
		{"none", nil, nil},
		{"NONE", &v1.HealthConfig{Test: []string{"NONE"}}, nil},
		{"inherit (empty)", &v1.HealthConfig{Test: []string{}}, nil},
		{"CMD with Docker's defaults", &v1.HealthConfig{Test: []string{"CMD", "/app", "health"}},
			&config.Healthcheck{Exec: []string{"/app", "health"}, Interval: "30s", Timeout: "30s", Retries: 3}},
		{"CMD-SHELL with its own timings", &v1.HealthConfig{Test: []string{"CMD-SHELL", "wget -q localhost || exit 1"},
			Interval: 5 * time.Second, Timeout: time.Second, StartPeriod: 10 * time.Second, Retries: 5},
			&config.Healthcheck{Exec: []string{"/bin/sh", "-c", "wget -q localhost || exit 1"}, Interval: "5s", Timeout: "1s", StartPeriod: "10s", Retries: 5}},
		{"CMD-SHELL with two strings", &v1.HealthConfig{Test: []string{"CMD-SHELL", "a", "b"}}, nil},
		{"unknown form", &v1.HealthConfig{Test: []string{"HTTP", "/"}}, nil},
		{"interval past what pullwise runs", &v1.HealthConfig{Test: []string{"CMD", "x"}, Interval: 2 * time.Hour}, nil},
	}
	for _, tc := range tests {
		if got := FromDocker(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
