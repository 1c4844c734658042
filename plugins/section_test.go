package plugins

import (
	"bytes"
	"testing"
)

func TestCustomSectionRoundTrip(t *testing.T) {
	empty := append([]byte(nil), wasmHeader...)
	a, err := AppendCustomSection(empty, "pullwise.metadata", []byte(`{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := AppendCustomSection(a, "other", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	// Annotating again replaces, never duplicates.
	c, err := AppendCustomSection(b, "pullwise.metadata", []byte(`{"v":2}`))
	if err != nil {
		t.Fatal(err)
	}
	got, ok, err := CustomSection(c, "pullwise.metadata")
	if err != nil || !ok || string(got) != `{"v":2}` {
		t.Fatalf("CustomSection = %q, %v, %v", got, ok, err)
	}
	if bytes.Count(c, []byte("pullwise.metadata")) != 1 {
		t.Fatal("metadata section duplicated")
	}
	if other, ok, _ := CustomSection(c, "other"); !ok || string(other) != "x" {
		t.Fatal("other section lost")
	}
	if _, ok, _ := CustomSection(c, "absent"); ok {
		t.Fatal("found a section that is not there")
	}
	if _, _, err := CustomSection(c[:len(c)-2], "pullwise.metadata"); err == nil {
		t.Fatal("a truncated module must be an error")
	}
}
