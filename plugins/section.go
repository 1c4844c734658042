package plugins

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// wasmHeader is the magic number and version 1 of the Wasm binary format.
var wasmHeader = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

// CustomSection returns the payload of the first custom section called name,
// reading only section headers: metadata is readable without compiling or
// running the module. ok is false when there is no such section.
func CustomSection(wasm []byte, name string) (payload []byte, ok bool, err error) {
	if !bytes.HasPrefix(wasm, wasmHeader) {
		return nil, false, errors.New("not a WebAssembly binary (bad magic number or version)")
	}
	rest := wasm[len(wasmHeader):]
	for len(rest) > 0 {
		id := rest[0]
		size, n := binary.Uvarint(rest[1:])
		if n <= 0 || uint64(len(rest)-1-n) < size {
			return nil, false, fmt.Errorf("truncated section (id %d) at byte %d", id, len(wasm)-len(rest))
		}
		body := rest[1+n : 1+n+int(size)]
		rest = rest[1+n+int(size):]
		if id != 0 {
			continue
		}
		nameLen, m := binary.Uvarint(body)
		if m <= 0 || uint64(len(body)-m) < nameLen {
			return nil, false, errors.New("malformed custom section name")
		}
		if string(body[m:m+int(nameLen)]) == name {
			return body[m+int(nameLen):], true, nil
		}
	}
	return nil, false, nil
}

// AppendCustomSection returns wasm with a custom section called name holding
// payload added at the end, where the format allows custom sections. An
// existing section of that name is removed first, so annotating twice
// replaces rather than duplicates.
func AppendCustomSection(wasm []byte, name string, payload []byte) ([]byte, error) {
	stripped, err := removeCustomSection(wasm, name)
	if err != nil {
		return nil, err
	}
	var body []byte
	body = binary.AppendUvarint(body, uint64(len(name)))
	body = append(body, name...)
	body = append(body, payload...)
	out := append(stripped, 0)
	out = binary.AppendUvarint(out, uint64(len(body)))
	return append(out, body...), nil
}

func removeCustomSection(wasm []byte, name string) ([]byte, error) {
	if !bytes.HasPrefix(wasm, wasmHeader) {
		return nil, errors.New("not a WebAssembly binary (bad magic number or version)")
	}
	out := append([]byte(nil), wasmHeader...)
	rest := wasm[len(wasmHeader):]
	for len(rest) > 0 {
		size, n := binary.Uvarint(rest[1:])
		if n <= 0 || uint64(len(rest)-1-n) < size {
			return nil, fmt.Errorf("truncated section at byte %d", len(wasm)-len(rest))
		}
		whole := rest[:1+n+int(size)]
		rest = rest[len(whole):]
		if whole[0] == 0 {
			body := whole[1+n:]
			if l, m := binary.Uvarint(body); m > 0 && uint64(len(body)-m) >= l && string(body[m:m+int(l)]) == name {
				continue
			}
		}
		out = append(out, whole...)
	}
	return out, nil
}
