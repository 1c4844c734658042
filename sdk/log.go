package sdk

// Level is a log level for Log, as passed to the host's pullwise.log import.
type Level uint32

// Log levels of ABI v1.
const (
	LevelDebug Level = 1
	LevelInfo  Level = 2
	LevelWarn  Level = 3
	LevelError Level = 4
)
