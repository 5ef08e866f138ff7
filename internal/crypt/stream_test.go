package crypt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"testing/iotest"
)

var (
	testKey = bytes.Repeat([]byte{0x5a}, 32)
	testIV  = []byte("0123456789abcdef")
)

// plaintext returns n deterministic pseudo-random bytes.
func plaintext(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(n), byte(n >> 8), byte(n >> 16)})
	_, _ = r.Read(b)
	return b
}

// onlyReader hides io.WriterTo so that io.Copy and friends use Read.
type onlyReader struct{ io.Reader }

func readAllErr(r io.Reader) ([]byte, error) { return io.ReadAll(onlyReader{r}) }

func readAll(t testing.TB, r io.Reader) []byte {
	t.Helper()
	b, err := readAllErr(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readChunks reads r with Read calls of the given sizes, cycling.
func readChunks(r io.Reader, sizes ...int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 1<<17)
	for i := 0; ; i++ {
		n, err := r.Read(buf[:sizes[i%len(sizes)]])
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// randomChunkReader returns reads of random sizes (including 0) from r.
type randomChunkReader struct {
	r   io.Reader
	rng *rand.Rand
}

func (c *randomChunkReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return c.r.Read(p[:c.rng.IntN(min(len(p), 70000))+0])
}

var (
	sources = []struct {
		name string
		wrap func([]byte) io.Reader
	}{
		{"bytes", func(b []byte) io.Reader { return bytes.NewReader(b) }},
		{"OneByte", func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
		{"Half", func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }},
		{"DataErr", func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) }},
		{"RandomChunks", func(b []byte) io.Reader {
			return &randomChunkReader{bytes.NewReader(b), rand.New(rand.NewPCG(uint64(len(b)), 1))}
		}},
	}
	consumers = []struct {
		name string
		read func(io.Reader) ([]byte, error)
	}{
		{"ReadAll", readAllErr},
		{"Copy(WriteTo)", func(r io.Reader) ([]byte, error) {
			var b bytes.Buffer
			_, err := io.Copy(&b, r)
			return b.Bytes(), err
		}},
		{"chunks 1,7,16,31", func(r io.Reader) ([]byte, error) { return readChunks(r, 1, 7, 16, 31) }},
		{"chunks 32,33,4097,65536,100000", func(r io.Reader) ([]byte, error) { return readChunks(r, 32, 33, 4097, 65536, 100000) }},
		{"chunks 17", func(r io.Reader) ([]byte, error) { return readChunks(r, 17) }},
	}
	sizes = []int{0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 65535, 65536, 65537, 2*65536 + 5, 3<<20 + 7, 5 << 20}
)

func TestStreamRoundTrip(t *testing.T) {
	for _, size := range sizes {
		plain := plaintext(size)
		want, err := EncryptBytes(plain, testKey, testIV)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(want)) != EncryptedSize(int64(size)) {
			t.Fatalf("size %d: ciphertext %d bytes, EncryptedSize %d", size, len(want), EncryptedSize(int64(size)))
		}
		for _, src := range sources {
			for _, con := range consumers {
				if size > 1<<20 && src.name == "OneByte" && con.name != "Copy(WriteTo)" {
					continue // slow and adds nothing over the smaller sizes
				}
				t.Run(fmt.Sprintf("%d/%s/%s", size, src.name, con.name), func(t *testing.T) {
					er, err := NewEncryptReader(src.wrap(plain), testKey, testIV)
					if err != nil {
						t.Fatal(err)
					}
					got, err := con.read(er)
					if err != nil || !bytes.Equal(got, want) {
						t.Fatalf("encrypt: %d bytes, err %v; want %d bytes equal to EncryptBytes", len(got), err, len(want))
					}
					dr, err := NewDecryptReader(src.wrap(want), testKey, testIV)
					if err != nil {
						t.Fatal(err)
					}
					back, err := con.read(dr)
					if err != nil || !bytes.Equal(back, plain) {
						t.Fatalf("decrypt: %d bytes, err %v; want %d bytes of plaintext", len(back), err, len(plain))
					}
				})
			}
		}
	}
}

func TestStreamIOTestReader(t *testing.T) {
	for _, size := range sizes {
		plain := plaintext(size)
		ct, _ := EncryptBytes(plain, testKey, testIV)
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			er, _ := NewEncryptReader(bytes.NewReader(plain), testKey, testIV)
			if err := iotest.TestReader(er, ct); err != nil {
				t.Errorf("encrypt reader: %v", err)
			}
			dr, _ := NewDecryptReader(bytes.NewReader(ct), testKey, testIV)
			if err := iotest.TestReader(dr, plain); err != nil {
				t.Errorf("decrypt reader: %v", err)
			}
			// Chained: decrypt(encrypt(plain)) read one byte at a time by the consumer's source.
			er, _ = NewEncryptReader(iotest.HalfReader(bytes.NewReader(plain)), testKey, testIV)
			dr, _ = NewDecryptReader(iotest.OneByteReader(er), testKey, testIV)
			if err := iotest.TestReader(dr, plain); err != nil {
				t.Errorf("chained: %v", err)
			}
		})
	}
}

// failWriter accepts limit bytes, then fails.
type failWriter struct {
	limit int
	err   error
	short bool
}

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) <= w.limit {
		w.limit -= len(p)
		return len(p), nil
	}
	n := w.limit
	w.limit = 0
	if w.short {
		return n, nil
	}
	return n, w.err
}

// zeroReader returns (0, nil) forever.
type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

// badCountReader claims to have read more than asked.
type badCountReader struct{}

func (badCountReader) Read(p []byte) (int, error) { return len(p) + 1, nil }

func TestStreamErrors(t *testing.T) {
	errSrc := errors.New("source failed")
	plain := plaintext(100000)
	ct, _ := EncryptBytes(plain, testKey, testIV)
	newEnc := func(r io.Reader) io.Reader { e, _ := NewEncryptReader(r, testKey, testIV); return e }
	newDec := func(r io.Reader) io.Reader { d, _ := NewDecryptReader(r, testKey, testIV); return d }
	tests := []struct {
		name   string
		mk     func() io.Reader
		want   error
		prefix []byte // the output must be a prefix of this
	}{
		{"encrypt ErrReader", func() io.Reader { return newEnc(iotest.ErrReader(errSrc)) }, errSrc, ct},
		{"encrypt data then error", func() io.Reader {
			return newEnc(io.MultiReader(bytes.NewReader(plain), iotest.ErrReader(errSrc)))
		}, errSrc, ct},
		{"encrypt timeout", func() io.Reader {
			return newEnc(iotest.TimeoutReader(iotest.HalfReader(bytes.NewReader(plain))))
		}, iotest.ErrTimeout, ct},
		{"encrypt unexpected EOF", func() io.Reader { return newEnc(iotest.ErrReader(io.ErrUnexpectedEOF)) }, io.ErrUnexpectedEOF, ct},
		{"encrypt no progress", func() io.Reader { return newEnc(zeroReader{}) }, io.ErrNoProgress, nil},
		{"encrypt bad count", func() io.Reader { return newEnc(badCountReader{}) }, errInvalidRead, nil},
		{"decrypt ErrReader", func() io.Reader { return newDec(iotest.ErrReader(errSrc)) }, errSrc, plain},
		{"decrypt data then error", func() io.Reader {
			return newDec(io.MultiReader(bytes.NewReader(ct), iotest.ErrReader(errSrc)))
		}, errSrc, plain},
		{"decrypt timeout", func() io.Reader {
			return newDec(iotest.TimeoutReader(iotest.HalfReader(bytes.NewReader(ct))))
		}, iotest.ErrTimeout, plain},
		{"decrypt no progress", func() io.Reader { return newDec(zeroReader{}) }, io.ErrNoProgress, nil},
		{"decrypt bad count", func() io.Reader { return newDec(badCountReader{}) }, errInvalidRead, nil},
		{"decrypt truncated", func() io.Reader { return newDec(bytes.NewReader(ct[:len(ct)-3])) }, ErrNotBlockMultiple, plain},
		{"decrypt truncated a block", func() io.Reader { return newDec(bytes.NewReader(ct[:len(ct)-16])) }, ErrBadPadding, plain},
		{"decrypt empty", func() io.Reader { return newDec(bytes.NewReader(nil)) }, ErrNotBlockMultiple, nil},
	}
	for _, tc := range tests {
		for _, con := range consumers {
			t.Run(tc.name+"/"+con.name, func(t *testing.T) {
				r := tc.mk()
				got, err := con.read(r)
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				if !bytes.HasPrefix(tc.prefix, got) {
					t.Fatalf("output (%d bytes) is not a prefix of the expected stream", len(got))
				}
				for range 2 { // sticky
					if n, err2 := r.Read(make([]byte, 64)); n != 0 || !errors.Is(err2, tc.want) {
						t.Fatalf("Read after error = %d, %v; want 0, %v", n, err2, tc.want)
					}
				}
			})
		}
	}

	t.Run("WriteTo source error", func(t *testing.T) {
		r := newEnc(io.MultiReader(bytes.NewReader(plain), iotest.ErrReader(errSrc)))
		var b bytes.Buffer
		n, err := r.(io.WriterTo).WriteTo(&b)
		if !errors.Is(err, errSrc) || n != int64(b.Len()) || !bytes.HasPrefix(ct, b.Bytes()) {
			t.Fatalf("WriteTo = %d, %v", n, err)
		}
	})
	for _, short := range []bool{false, true} {
		t.Run(fmt.Sprintf("WriteTo writer error short=%v", short), func(t *testing.T) {
			errW := errors.New("writer failed")
			want := errW
			if short {
				want = io.ErrShortWrite
			}
			for _, r := range []io.Reader{newEnc(bytes.NewReader(plain)), newDec(bytes.NewReader(ct))} {
				w := &failWriter{limit: 70000, err: errW, short: short}
				n, err := io.Copy(w, r)
				if !errors.Is(err, want) || n != 70000 {
					t.Fatalf("io.Copy = %d, %v; want 70000, %v", n, err, want)
				}
			}
		})
	}
	t.Run("decrypt bad padding via WriteTo", func(t *testing.T) {
		bad := bytes.Clone(ct)
		bad[len(bad)-17] ^= 1 // flips one bit of the final plaintext block (the padding)
		_, err := io.Copy(io.Discard, newDec(bytes.NewReader(bad)))
		if !errors.Is(err, ErrBadPadding) {
			t.Fatalf("err = %v, want ErrBadPadding", err)
		}
	})
	t.Run("zero-length Read", func(t *testing.T) {
		for _, r := range []io.Reader{newEnc(bytes.NewReader(plain)), newDec(bytes.NewReader(ct))} {
			if n, err := r.Read(nil); n != 0 || err != nil {
				t.Fatalf("Read(nil) = %d, %v", n, err)
			}
		}
	})
}

func TestOpenSSLInterop(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not found in PATH: skipping the interoperability test")
	}
	dir := t.TempDir()
	kh, ih := hex.EncodeToString(testKey), hex.EncodeToString(testIV)
	run := func(t *testing.T, in []byte, decrypt bool) []byte {
		t.Helper()
		inPath, outPath := filepath.Join(dir, "in"), filepath.Join(dir, "out")
		if err := os.WriteFile(inPath, in, 0o600); err != nil {
			t.Fatal(err)
		}
		args := []string{"enc", "-aes-256-cbc", "-K", kh, "-iv", ih, "-in", inPath, "-out", outPath}
		if decrypt {
			args = append(args, "-d")
		}
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		b, err := os.ReadFile(outPath)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, size := range []int{0, 1, 15, 16, 17, 65536, 1<<20 + 3} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			plain := plaintext(size)
			er, _ := NewEncryptReader(bytes.NewReader(plain), testKey, testIV)
			ours := readAll(t, er)
			if theirs := run(t, plain, false); !bytes.Equal(ours, theirs) {
				t.Fatalf("ciphertext differs from openssl's (%d vs %d bytes)", len(ours), len(theirs))
			}
			if back := run(t, ours, true); !bytes.Equal(back, plain) {
				t.Fatalf("openssl -d of our ciphertext differs from the plaintext")
			}
			dr, _ := NewDecryptReader(bytes.NewReader(run(t, plain, false)), testKey, testIV)
			if back := readAll(t, dr); !bytes.Equal(back, plain) {
				t.Fatalf("our decryption of openssl's ciphertext differs from the plaintext")
			}
		})
	}
}

// patternReader yields n bytes of a repeating pattern without allocating.
type patternReader struct{ n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	for i := range b {
		b[i] = byte(i)
	}
	p.n -= int64(len(b))
	return len(b), nil
}

// heapSampler is an io.Writer that counts bytes and samples HeapInuse every 16 MiB.
type heapSampler struct {
	n, next int64
	maxHeap uint64
}

func (h *heapSampler) Write(p []byte) (int, error) {
	h.n += int64(len(p))
	if h.n >= h.next {
		h.next += 16 << 20
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		h.maxHeap = max(h.maxHeap, ms.HeapInuse)
	}
	return len(p), nil
}

func TestStreamHeapBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 256 MiB")
	}
	const size = 256 << 20
	for _, tc := range []struct {
		name string
		copy func(w io.Writer, r io.Reader) (int64, error)
	}{
		{"io.Copy (WriteTo)", io.Copy},
		{"Read 8 KiB", func(w io.Writer, r io.Reader) (int64, error) {
			return io.CopyBuffer(w, onlyReader{r}, make([]byte, 8<<10))
		}},
		{"Read 20 B", func(w io.Writer, r io.Reader) (int64, error) {
			return io.CopyBuffer(w, onlyReader{r}, make([]byte, 20))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := int64(size)
			if tc.name == "Read 20 B" {
				n = 16 << 20 // 20-byte reads are slow; 16 MiB still spans many buffers
			}
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			// Encrypt, then decrypt the ciphertext stream: both readers in one pipeline.
			er, _ := NewEncryptReader(&patternReader{n: n}, testKey, testIV)
			dr, _ := NewDecryptReader(onlyReader{er}, testKey, testIV)
			sink := &heapSampler{next: 16 << 20}
			got, err := tc.copy(sink, dr)
			if err != nil || got != n {
				t.Fatalf("copied %d, %v; want %d", got, err, n)
			}
			growth := int64(sink.maxHeap) - int64(before.HeapInuse)
			t.Logf("%d MiB streamed; max HeapInuse growth %d KiB", n>>20, growth>>10)
			if growth > 4<<20 {
				t.Fatalf("HeapInuse grew by %d KiB while streaming (limit 4 MiB)", growth>>10)
			}
		})
	}
}

func TestStreamSteadyStateAllocs(t *testing.T) {
	for _, size := range []int{8, 31, 32, 8 << 10, 64 << 10, 1 << 20} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			er, _ := NewEncryptReader(&patternReader{n: 1 << 62}, testKey, testIV)
			dr, _ := NewDecryptReader(onlyReader{er}, testKey, testIV)
			buf := make([]byte, size)
			// The internal buffers are allocated once, lazily; take that cost out of the measurement.
			er.(*encryptReader).buffer()
			dr.(*decryptReader).buffer()
			if _, err := io.ReadFull(dr, buf); err != nil {
				t.Fatal(err)
			}
			if a := testing.AllocsPerRun(50, func() { _, _ = io.ReadFull(er, buf) }); a != 0 {
				t.Errorf("encrypt reader: %v allocs per Read", a)
			}
			if a := testing.AllocsPerRun(50, func() { _, _ = io.ReadFull(dr, buf) }); a != 0 {
				t.Errorf("encrypt+decrypt readers: %v allocs per Read", a)
			}
		})
	}
}
