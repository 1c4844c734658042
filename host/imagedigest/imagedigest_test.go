package imagedigest

import (
	"encoding/json"
	"strings"
	"testing"
)

const (
	a = Digest("sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
	b = Digest("sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
	c = Digest("sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc")
)

func TestMatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Pair
		pin  Digest
		want bool
	}{
		{"no pin", Pair{Digest: a}, "", true},
		{"the manifest", Pair{Digest: a, IndexDigest: b}, a, true},
		{"the index", Pair{Digest: a, IndexDigest: b}, b, true},
		{"another", Pair{Digest: a, IndexDigest: b}, c, false},
		{"no index is not the empty pin's match only", Pair{Digest: a}, b, false},
		{"nothing resolved", Pair{}, a, false},
	} {
		if got := tc.p.Matches(tc.pin); got != tc.want {
			t.Errorf("%s: Matches(%s) = %v, want %v", tc.name, tc.pin, got, tc.want)
		}
	}
}

func TestNormalize(t *testing.T) {
	hex := strings.TrimPrefix(string(a), "sha256:")
	for in, want := range map[string]Digest{
		string(a):                               a,
		" SHA256:" + strings.ToUpper(hex) + " ": a,
		hex:                                     a,
		"":                                      "",
	} {
		if got := Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
	if Hex(a) != hex || Hex("") != "" {
		t.Errorf("Hex(%s) = %q, Hex(\"\") = %q", a, Hex(a), Hex(""))
	}
}

// A pair embedded in a record keeps the record's JSON fields as they were
// when they were strings: devices keep their state files across upgrades.
func TestPairJSONIsFlat(t *testing.T) {
	type record struct {
		ID string `json:"id"`
		Pair
	}
	got, _ := json.Marshal(record{ID: "x", Pair: Pair{Digest: a}})
	want := `{"id":"x","digest":"` + string(a) + `"}`
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	var back record
	if err := json.Unmarshal([]byte(`{"id":"x","digest":"`+string(a)+`","indexDigest":"`+string(b)+`"}`), &back); err != nil || back.Digest != a || back.IndexDigest != b {
		t.Fatalf("got %+v, %v", back, err)
	}
}
