//go:build !race

package plugins_test

// raceDetector: see race_on_test.go.
const raceDetector = false
