package crypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"
)

const benchSize = 64 << 20

var benchData = sync.OnceValues(func() (plain, ct []byte) {
	plain = plaintext(benchSize)
	ct, _ = EncryptBytes(plain, testKey, testIV)
	return plain, ct
})

func rawMode(b testing.TB, encrypt bool) cipher.BlockMode {
	blk, err := aes.NewCipher(testKey)
	if err != nil {
		b.Fatal(err)
	}
	if encrypt {
		return cipher.NewCBCEncrypter(blk, testIV)
	}
	return cipher.NewCBCDecrypter(blk, testIV)
}

// BenchmarkRawCBC is the ceiling: CryptBlocks over a 64 MiB buffer in one call.
func BenchmarkRawCBC(b *testing.B) {
	plain, _ := benchData()
	buf := bytes.Clone(plain)
	for _, enc := range []bool{true, false} {
		name := "Encrypt"
		if !enc {
			name = "Decrypt"
		}
		b.Run(name, func(b *testing.B) {
			m := rawMode(b, enc)
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				m.CryptBlocks(buf, buf)
			}
		})
	}
}

// BenchmarkEncryptReader encrypts 64 MiB from a bytes.Reader into io.Discard: "io.Copy" goes through
// WriteTo, "Read 32KiB" through Read (io.Copy's default buffer size, WriterTo hidden).
func BenchmarkEncryptReader(b *testing.B) {
	plain, _ := benchData()
	b.Run("io.Copy", func(b *testing.B) {
		b.SetBytes(benchSize)
		b.ReportAllocs()
		for b.Loop() {
			r, _ := NewEncryptReader(bytes.NewReader(plain), testKey, testIV)
			if _, err := io.Copy(io.Discard, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Read 32KiB", func(b *testing.B) {
		buf := make([]byte, 32<<10)
		b.SetBytes(benchSize)
		b.ReportAllocs()
		for b.Loop() {
			r, _ := NewEncryptReader(bytes.NewReader(plain), testKey, testIV)
			if _, err := io.CopyBuffer(io.Discard, onlyReader{r}, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDecryptReader decrypts the 64 MiB ciphertext from a bytes.Reader into io.Discard.
func BenchmarkDecryptReader(b *testing.B) {
	_, ct := benchData()
	b.Run("io.Copy", func(b *testing.B) {
		b.SetBytes(benchSize)
		b.ReportAllocs()
		for b.Loop() {
			r, _ := NewDecryptReader(bytes.NewReader(ct), testKey, testIV)
			if _, err := io.Copy(io.Discard, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Read 32KiB", func(b *testing.B) {
		buf := make([]byte, 32<<10)
		b.SetBytes(benchSize)
		b.ReportAllocs()
		for b.Loop() {
			r, _ := NewDecryptReader(bytes.NewReader(ct), testKey, testIV)
			if _, err := io.CopyBuffer(io.Discard, onlyReader{r}, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReaderSteadyState is one 64 KiB Read of an endless stream per op: it shows the per-Read
// allocations (0) once the reader runs, and the small-Read path (16 B, through the internal buffer).
func BenchmarkReaderSteadyState(b *testing.B) {
	for _, size := range []int{16, 64 << 10} {
		buf := make([]byte, size)
		b.Run("Encrypt/"+byteSize(size), func(b *testing.B) {
			r, _ := NewEncryptReader(&patternReader{n: 1 << 62}, testKey, testIV)
			r.(*encryptReader).buffer() // the one-time lazy buffer, outside the measurement
			_, _ = io.ReadFull(r, buf)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.ReadFull(r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("EncryptDecrypt/"+byteSize(size), func(b *testing.B) {
			e, _ := NewEncryptReader(&patternReader{n: 1 << 62}, testKey, testIV)
			r, _ := NewDecryptReader(onlyReader{e}, testKey, testIV)
			e.(*encryptReader).buffer() // the one-time lazy buffers, outside the measurement
			r.(*decryptReader).buffer()
			_, _ = io.ReadFull(r, buf)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := io.ReadFull(r, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func byteSize(n int) string {
	if n >= 1<<10 {
		return strconv.Itoa(n>>10) + "KiB"
	}
	return strconv.Itoa(n) + "B"
}

// BenchmarkEncryptRatio interleaves raw CryptBlocks and the encrypt reader (io.Copy) over the same
// 64 MiB in every op, and reports reader throughput / raw throughput as "ratio" (also "dec-ratio" for
// decryption), so that machine noise hits both sides alike.
func BenchmarkEncryptRatio(b *testing.B) {
	plain, ct := benchData()
	buf := bytes.Clone(plain)
	var rawEnc, rdrEnc, rawDec, rdrDec time.Duration
	for b.Loop() {
		t0 := time.Now()
		rawMode(b, true).CryptBlocks(buf, buf)
		t1 := time.Now()
		r, _ := NewEncryptReader(bytes.NewReader(plain), testKey, testIV)
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		rawMode(b, false).CryptBlocks(buf, buf)
		t3 := time.Now()
		d, _ := NewDecryptReader(bytes.NewReader(ct), testKey, testIV)
		if _, err := io.Copy(io.Discard, d); err != nil {
			b.Fatal(err)
		}
		t4 := time.Now()
		rawEnc += t1.Sub(t0)
		rdrEnc += t2.Sub(t1)
		rawDec += t3.Sub(t2)
		rdrDec += t4.Sub(t3)
	}
	mibps := func(d time.Duration) float64 { return float64(b.N) * benchSize / (1 << 20) / d.Seconds() }
	b.ReportMetric(rawEnc.Seconds()/rdrEnc.Seconds(), "ratio")
	b.ReportMetric(rawDec.Seconds()/rdrDec.Seconds(), "dec-ratio")
	b.ReportMetric(mibps(rawEnc), "raw-enc-MiB/s")
	b.ReportMetric(mibps(rdrEnc), "reader-enc-MiB/s")
	b.ReportMetric(mibps(rawDec), "raw-dec-MiB/s")
	b.ReportMetric(mibps(rdrDec), "reader-dec-MiB/s")
}
