package crypt

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"testing"
)

// chunkedReader returns reads of at most size bytes (1 if size is 0).
type chunkedReader struct {
	r    io.Reader
	size int
}

func (c chunkedReader) Read(p []byte) (int, error) {
	return c.r.Read(p[:min(len(p), max(c.size, 1))])
}

func FuzzDecryptReader(f *testing.F) {
	for _, n := range []int{0, 1, 15, 16, 17, 100} {
		ct, _ := EncryptBytes(plaintext(n), testKey, testIV)
		f.Add(ct, uint16(7), uint16(33))
		if len(ct) > 1 {
			f.Add(ct[:len(ct)-1], uint16(1), uint16(1))
			bad := bytes.Clone(ct)
			bad[len(bad)-1] ^= 0x80
			f.Add(bad, uint16(16), uint16(16))
		}
	}
	f.Add([]byte{}, uint16(0), uint16(0))
	f.Add(make([]byte, 15), uint16(3), uint16(5))
	f.Fuzz(func(t *testing.T, ct []byte, srcChunk, readSize uint16) {
		want, wantErr := DecryptBytes(ct, testKey, testIV)
		dr, err := NewDecryptReader(chunkedReader{bytes.NewReader(ct), int(srcChunk)}, testKey, testIV)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readChunks(dr, max(int(readSize)%70000, 1))
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("stream err %v, DecryptBytes err %v", err, wantErr)
		}
		if wantErr != nil {
			for _, sentinel := range []error{ErrNotBlockMultiple, ErrBadPadding} {
				if errors.Is(wantErr, sentinel) != errors.Is(err, sentinel) {
					t.Fatalf("stream err %v, DecryptBytes err %v", err, wantErr)
				}
			}
			return
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("stream plaintext differs from DecryptBytes")
		}
		again, _ := EncryptBytes(got, testKey, testIV)
		if !bytes.Equal(again, ct) {
			t.Fatalf("re-encryption differs from the ciphertext")
		}
	})
}

func FuzzEncryptReader(f *testing.F) {
	f.Add([]byte{}, uint16(0), uint16(1))
	f.Add([]byte("hello, sharepoint"), uint16(3), uint16(5))
	f.Add(plaintext(1000), uint16(16), uint16(31))
	f.Fuzz(func(t *testing.T, plain []byte, srcChunk, readSize uint16) {
		want, _ := EncryptBytes(plain, testKey, testIV)
		er, err := NewEncryptReader(chunkedReader{bytes.NewReader(plain), int(srcChunk)}, testKey, testIV)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readChunks(er, max(int(readSize)%70000, 1))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("stream ciphertext differs from EncryptBytes (err %v)", err)
		}
	})
}

// unpadReference is the obvious PKCS#7 check, for comparison with the constant-time one.
func unpadReference(b []byte) ([]byte, bool) {
	if len(b) == 0 || len(b)%16 != 0 {
		return nil, false
	}
	n := int(b[len(b)-1])
	if n < 1 || n > 16 {
		return nil, false
	}
	for _, c := range b[len(b)-n:] {
		if int(c) != n {
			return nil, false
		}
	}
	return b[:len(b)-n], true
}

func FuzzUnpad(f *testing.F) {
	for _, n := range []int{0, 1, 15, 16, 31} {
		f.Add(Pad(plaintext(n)))
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0}, 16))
	f.Add(bytes.Repeat([]byte{17}, 16))
	f.Add(append(bytes.Repeat([]byte{1}, 14), 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Unpad(b)
		want, ok := unpadReference(b)
		if ok != (err == nil) || !bytes.Equal(got, want) {
			t.Fatalf("Unpad(%x) = %x, %v; reference %x, %v", b, got, err, want, ok)
		}
		if err == nil && !bytes.Equal(Pad(got), b) {
			t.Fatalf("Pad(Unpad(%x)) = %x", b, Pad(got))
		}
		if err != nil && !errors.Is(err, ErrNotBlockMultiple) && !errors.Is(err, ErrBadPadding) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

func FuzzOpenMessage(f *testing.F) {
	key := bytes.Repeat([]byte{0x42}, 32)
	for _, ev := range []string{sampleProgress, sampleEndNumbers, sampleError, samplePostponed, sampleUnknown} {
		sealed, err := SealEvent([]byte(ev), jobID, key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(sealed)
		f.Add(PlainMessage([]byte(ev)))
		f.Add(ev)
	}
	f.Add("")
	f.Add("e30=") // {}
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{"Label":"Encrypted","JobId":"x","IV":"AAAAAAAAAAAAAAAAAAAAAA==","Content":"AAAAAAAAAAAAAAAAAAAAAA=="}`)))
	f.Add(`{"Label":"Encrypted","JobId":1,"IV":null,"Content":[]}`)
	keyFor := func(string) ([]byte, error) { return key, nil }
	f.Fuzz(func(t *testing.T, msg string) {
		ev, err := OpenMessage(msg, keyFor)
		if err != nil {
			if ev.Name != "" || ev.Fields != nil {
				t.Fatal("non-zero Event with an error")
			}
			return
		}
		if ev.Name == "" || ev.Fields == nil || len(ev.Raw) == 0 {
			t.Fatalf("incomplete event %+v", ev)
		}
		again, err := ParseEvent(ev.Raw)
		if err != nil {
			t.Fatalf("ParseEvent(Raw): %v", err)
		}
		if again.Name != ev.Name || again.TimeRaw != ev.TimeRaw || (again.JobID != ev.JobID && again.JobID != "") {
			t.Fatalf("re-parse differs: %+v vs %+v", again, ev)
		}
		_ = ev.View()
		_ = ev.DedupKey()
		if _, err := MarshalEvent(ev.Name, ev.JobID, ev.Time, ev.Fields); err != nil {
			t.Fatalf("MarshalEvent: %v", err)
		}
	})
}
