package sdk

import (
	"encoding/json"
	"fmt"

	"github.com/mailru/easyjson/jlexer"
	"github.com/mailru/easyjson/jwriter"
)

// DecideFunc turns an input into a decision. It must not do I/O: everything
// it may look at is in the Input.
type DecideFunc func(Input) (Decision, error)

// ValidateFunc checks a module's settings; a nil error accepts them.
type ValidateFunc func(settings json.RawMessage) error

// Policy is what an author registers: one decision function and, optionally,
// a settings check.
type Policy struct {
	Decide   DecideFunc
	Validate ValidateFunc
}

// registered is the policy of this module. Package state is unavoidable here:
// a Wasm export is a plain function with no receiver, so the exports in
// export_wasip1.go must find the policy somewhere global. Register sets it
// once, from the policy's init.
var registered *Policy

// Register makes p the module's policy. Call it once from an init function in
// the policy's main package. Natively it only records p, so tests of the same
// package run unchanged.
func Register(p Policy) {
	if p.Decide == nil {
		panic("sdk.Register: Policy.Decide is nil")
	}
	if registered != nil {
		panic("sdk.Register: called twice")
	}
	registered = &p
}

// Evaluate runs p on a JSON input exactly as the Wasm export does, returning
// the JSON answer. The codec is generated (abi_easyjson.go, `make generate`)
// rather than reflective: inside Wasm, with the host's time limit armed,
// every loop iteration costs a check, and encoding/json's reflection and
// double scan tripled the decision latency (see docs/RATIONALE.md). Policy tests may call it to exercise the JSON layer too.
func (p Policy) Evaluate(in []byte) []byte {
	var input Input
	l := jlexer.Lexer{Data: in}
	input.UnmarshalEasyJSON(&l)
	if err := l.Error(); err != nil {
		return errorJSON(fmt.Errorf("decoding input: %w", err))
	}
	d, err := p.Decide(input)
	if err == nil {
		err = d.Validate()
	}
	if err != nil {
		return errorJSON(err)
	}
	return marshal(d)
}

// CheckSettings runs p's settings check, returning the JSON answer.
func (p Policy) CheckSettings(settings []byte) []byte {
	r := SettingsResult{Valid: true}
	if p.Validate != nil {
		if err := p.Validate(settings); err != nil {
			r = SettingsResult{Valid: false, Message: err.Error()}
		}
	}
	return r.json()
}

func (r SettingsResult) json() []byte {
	return marshal(r)
}

// marshal encodes v with its generated codec. jwriter directly, not
// easyjson.Marshal: easyjson's root package imports net/http, which would
// be linked into every module (5.0 → 3.2 MB for always.wasm; see
// docs/RATIONALE.md).
func marshal(v interface{ MarshalEasyJSON(*jwriter.Writer) }) []byte {
	var w jwriter.Writer
	v.MarshalEasyJSON(&w)
	out, err := w.BuildBytes()
	if err != nil {
		return errorJSON(err)
	}
	return out
}

func errorJSON(err error) []byte {
	// jwriter rather than encoding/json: a reflective Marshal here would link
	// encoding/json's whole encoder into every module (see module size in
	// docs/RATIONALE.md).
	var w jwriter.Writer
	w.RawString(`{"error":`)
	w.String(err.Error())
	w.RawByte('}')
	out, _ := w.BuildBytes()
	return out
}
