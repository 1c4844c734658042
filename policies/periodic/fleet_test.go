//go:build !wasip1

// The fleet simulation runs on the host (it reads host/config, which does
// not build for wasip1), never in the module.

package main

import (
	"container/heap"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pullwise/pullwise/host/config"
	"github.com/pullwise/pullwise/sdk"
)

// BenchmarkFleetSplay simulates 10,000 devices' schedules under periodic
// — the policy's decisions and nothing else, no containers — after a
// fleet-wide event that had them all create their app within 10 minutes
// (a rollout, a power cut), and reports the peak-to-mean ratio of
// manifest requests per minute at the registry over the second and third
// day: with each device's phase from its identity (ptm-splay, target
// ≤ 1.5), and without (ptm-nosplay, the behaviour before device.splay),
// for a 1h and a 6h interval. Independent devices cannot do better than
// chance: with random phases a minute's count is Poisson-like, so the peak
// sits about three standard deviations above the mean, which is ~1.2× the
// mean at 1h (167 requests a minute) and ~1.5× at 6h (28 a minute).
//
//	go test -run '^$' -bench FleetSplay -benchtime 1x ./policies/periodic/
func BenchmarkFleetSplay(b *testing.B) {
	for _, interval := range []string{"1h", "6h"} {
		b.Run(interval, func(b *testing.B) {
			var withSplay, without float64
			for i := 0; i < b.N; i++ {
				withSplay = fleetPeakToMean(b, 10_000, interval, true)
				without = fleetPeakToMean(b, 10_000, interval, false)
			}
			b.ReportMetric(withSplay, "ptm-splay")
			b.ReportMetric(without, "ptm-nosplay")
		})
	}
}

// TestFleetSplay holds the benchmark's claim at a smaller fleet.
func TestFleetSplay(t *testing.T) {
	if got := fleetPeakToMean(t, 2000, "1h", true); got > 1.8 {
		t.Errorf("2,000 devices with phases: peak-to-mean %.2f per minute", got)
	}
	if got := fleetPeakToMean(t, 2000, "1h", false); got < 5 {
		t.Errorf("2,000 devices without phases: peak-to-mean %.2f; the simulation no longer shows the waves it is about", got)
	}
}

type due struct {
	at     time.Time
	device int
}

type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func fleetPeakToMean(tb testing.TB, n int, interval string, splay bool) float64 {
	tb.Helper()
	start := time.Date(2026, 11, 27, 12, 3, 0, 0, time.UTC)
	end := start.Add(72 * time.Hour)
	settings := []byte(`{"interval":"` + interval + `"}`)
	rng := rand.New(rand.NewPCG(1, 2))
	device := make([]sdk.Device, n)
	var h dueHeap
	for i := range n {
		device[i].Link.Online = true
		if splay {
			device[i].Splay = config.Device{ID: fmt.Sprintf("device-%05d", i)}.Splay("")
		}
		h = append(h, due{at: start.Add(time.Duration(rng.Int64N(int64(10 * time.Minute)))), device: i})
	}
	heap.Init(&h)
	perMinute := map[int64]int{}
	from, to := start.Add(24*time.Hour), end
	for h.Len() > 0 {
		d := heap.Pop(&h).(due)
		if d.at.After(end) {
			break
		}
		// A manifest request at d.at, then the decision that follows it.
		if !d.at.Before(from) {
			perMinute[d.at.Unix()/60]++
		}
		checked := d.at
		dec, err := decide(sdk.Input{Event: sdk.EventTick, Now: d.at, Device: device[d.device], Settings: settings,
			Image: sdk.Image{LocalDigest: "sha256:aaaa", RemoteDigest: "sha256:aaaa", LastCheck: &checked}})
		if err != nil || dec.NextCheck == nil {
			tb.Fatalf("decision %+v %v", dec, err)
		}
		heap.Push(&h, due{at: *dec.NextCheck, device: d.device})
	}
	minutes := to.Sub(from).Minutes()
	total, peak := 0, 0
	for _, c := range perMinute {
		total += c
		peak = max(peak, c)
	}
	return float64(peak) / (float64(total) / minutes)
}
