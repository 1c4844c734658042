//go:build race

package plugins_test

// raceDetector: the race detector keeps shadow memory for every page the
// program touched, so resident-memory measurements mean nothing under it.
const raceDetector = true
