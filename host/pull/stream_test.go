package pull

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
)

// recordingWriter is a content.Writer that records each write's size.
type recordingWriter struct {
	content.Writer
	writes []int
	got    bytes.Buffer
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, len(p))
	return w.got.Write(p)
}

// chunkedReader hands out data in 32 KiB reads, then fails with err.
type chunkedReader struct {
	data []byte
	err  error
}

func (r *chunkedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p[:min(len(p), 32<<10)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// TestStreamingWriter: the network's bytes reach containerd every
// streamBuffer bytes, never more held back, and what arrived before a
// failure is written before the failure is returned.
func TestStreamingWriter(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (300<<10)/16) // 300 KiB
	cut := errors.New("connection reset")
	for _, tc := range []struct {
		name string
		err  error
	}{{"to the end", io.EOF}, {"cut", cut}} {
		rec := &recordingWriter{}
		n, err := streamingWriter{rec}.ReadFrom(&chunkedReader{data: data, err: tc.err})
		if tc.err == io.EOF && err != nil || tc.err != io.EOF && !errors.Is(err, cut) {
			t.Fatalf("%s: error %v", tc.name, err)
		}
		if n != int64(len(data)) || !bytes.Equal(rec.got.Bytes(), data) {
			t.Fatalf("%s: wrote %d of %d bytes", tc.name, n, len(data))
		}
		want := []int{streamBuffer, streamBuffer, len(data) - 2*streamBuffer}
		if len(rec.writes) != len(want) || rec.writes[0] != want[0] || rec.writes[1] != want[1] || rec.writes[2] != want[2] {
			t.Fatalf("%s: writes %v, want %v", tc.name, rec.writes, want)
		}
	}
}
