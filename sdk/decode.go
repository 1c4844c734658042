package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
)

// maxOutput bounds what the host accepts from a module in one answer. A
// decision is a few hundred bytes; anything near this is a broken module.
const maxOutput = 64 << 10

// DecodeDecision parses a module's decide output strictly. Malformed output is
// an error, never a silent default: unknown fields, missing required fields,
// unknown actions and contradictory combinations are all rejected. An output
// of the form {"error": "..."} is the module reporting that it could not
// decide, and is returned as an error carrying that message.
func DecodeDecision(out []byte) (Decision, error) {
	var d Decision
	if len(out) > maxOutput {
		return d, fmt.Errorf("malformed decision: %d bytes exceeds the %d byte limit", len(out), maxOutput)
	}
	keys, err := objectKeys(out)
	if err != nil {
		return d, fmt.Errorf("malformed decision: %w (output %q)", err, clip(out))
	}
	if msg, ok := keys["error"]; ok {
		var s string
		if err := json.Unmarshal(msg, &s); err != nil || len(keys) != 1 || s == "" {
			return d, fmt.Errorf("malformed decision: an error answer must be {\"error\": \"a message\"} only (output %q)", clip(out))
		}
		return d, &PolicyError{Message: s}
	}
	for _, k := range []string{"action", "restartOnChange", "reason"} {
		if _, ok := keys[k]; !ok {
			return d, fmt.Errorf("malformed decision: required field %q is missing (output %q)", k, clip(out))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return d, fmt.Errorf("malformed decision: %w (output %q)", err, clip(out))
	}
	if err := d.Validate(); err != nil {
		return d, fmt.Errorf("malformed decision: %w", err)
	}
	return d, nil
}

// Validate checks a decision's fields against each other. The SDK runs it
// before a module returns, and the host runs it again on what it receives.
func (d Decision) Validate() error {
	if !slices.Contains(Actions, d.Action) {
		return fmt.Errorf("unknown action %q (want one of %v)", d.Action, Actions)
	}
	if d.Reason == "" {
		return errors.New("reason is empty: every decision must say why")
	}
	switch d.Action {
	case ActionCheckRemote, ActionPull:
		if d.OnPullFailure != PullFailureFail && d.OnPullFailure != PullFailureKeepExisting {
			return fmt.Errorf("action %q needs onPullFailure %q or %q, got %q", d.Action, PullFailureFail, PullFailureKeepExisting, d.OnPullFailure)
		}
	default:
		if d.OnPullFailure != "" {
			return fmt.Errorf("onPullFailure is only meaningful with %q or %q, not %q", ActionCheckRemote, ActionPull, d.Action)
		}
	}
	if d.Action == ActionDefer && d.NextCheck == nil {
		return errors.New("action \"defer\" needs nextCheck: when to ask again")
	}
	return nil
}

// DecodeSettingsResult parses a module's validate-settings output strictly.
func DecodeSettingsResult(out []byte) (SettingsResult, error) {
	var r SettingsResult
	if len(out) > maxOutput {
		return r, fmt.Errorf("malformed settings result: %d bytes exceeds the %d byte limit", len(out), maxOutput)
	}
	keys, err := objectKeys(out)
	if err != nil {
		return r, fmt.Errorf("malformed settings result: %w (output %q)", err, clip(out))
	}
	if _, ok := keys["valid"]; !ok {
		return r, fmt.Errorf("malformed settings result: required field \"valid\" is missing (output %q)", clip(out))
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("malformed settings result: %w (output %q)", err, clip(out))
	}
	if !r.Valid && r.Message == "" {
		return r, errors.New("malformed settings result: invalid settings need a message saying what is wrong")
	}
	return r, nil
}

// objectKeys reads a JSON object's members. A key given twice or a null
// value is an error: encoding/json would keep the last of two keys and
// read null as the zero value, which is a silent default.
func objectKeys(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil {
		return nil, err
	} else if d, ok := t.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	keys := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		k, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if _, dup := keys[k]; dup {
			return nil, fmt.Errorf("field %q is given twice", k)
		}
		if string(v) == "null" {
			return nil, fmt.Errorf("field %q is null: leave a field out rather than give it no value", k)
		}
		keys[k] = v
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, err
	}
	if dec.More() {
		return nil, errors.New("data after the JSON object")
	}
	return keys, nil
}

// PolicyError is a module's own report that it could not decide.
type PolicyError struct{ Message string }

func (e *PolicyError) Error() string { return "policy error: " + e.Message }

func clip(b []byte) string {
	const n = 200
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
