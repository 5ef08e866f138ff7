package crypt

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// NIST SP 800-38A, F.2.5 (CBC-AES256.Encrypt) and F.2.6 (CBC-AES256.Decrypt).
const (
	nistKey = "603deb1015ca71be2b73aef0857d7781 1f352c073b6108d72d9810a30914dff4"
	nistIV  = "000102030405060708090a0b0c0d0e0f"
	nistPT  = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51" +
		"30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710"
	nistCT = "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d" +
		"39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b"
)

func TestNISTCBCAES256(t *testing.T) {
	key, iv, pt, ct := unhex(t, nistKey), unhex(t, nistIV), unhex(t, nistPT), unhex(t, nistCT)
	tests := []struct {
		name    string
		encrypt bool
		in, out []byte
	}{
		{"F.2.5 encrypt", true, pt, ct},
		{"F.2.6 decrypt", false, ct, pt},
		{"F.2.5 first block", true, pt[:16], ct[:16]},
		{"F.2.6 last two blocks", false, ct[32:], pt[32:]}, // CBC decrypt restarts with IV = previous block
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			iv := iv
			if tc.name == "F.2.6 last two blocks" {
				iv = ct[16:32]
			}
			got, err := cbcNoPad(tc.encrypt, key, iv, bytes.Clone(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.out) {
				t.Fatalf("got %x, want %x", got, tc.out)
			}
		})
	}
	if _, err := cbcNoPad(true, key, iv, make([]byte, 15)); !errors.Is(err, ErrNotBlockMultiple) {
		t.Fatalf("cbcNoPad(15 bytes) = %v, want ErrNotBlockMultiple", err)
	}
}

// Padded known answers, cross-checked with `openssl enc -aes-256-cbc -K <nistKey> -iv <nistIV>`.
func TestPaddedKnownAnswers(t *testing.T) {
	key, iv := unhex(t, nistKey), unhex(t, nistIV)
	tests := []struct {
		name string
		pt   []byte
		ct   string
	}{
		{"empty: one block of 0x10", nil, "7e9248e5d829ca7593f0c549db2f5b8c"},
		{"17 bytes", []byte("hello, sharepoint"), "eb0065edb33cf7067151c7b4553c3e76e53a16bea3ae62afbe26187799789f6e"},
		{"NIST 64 bytes + full pad block", unhex(t, nistPT), nistCT + "3f461796d6b0d6b2e0c2a72b4d80e644"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.ct)
			got, err := EncryptBytes(tc.pt, key, iv)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("EncryptBytes = %x, %v; want %x", got, err, want)
			}
			if int64(len(got)) != EncryptedSize(int64(len(tc.pt))) {
				t.Fatalf("EncryptedSize(%d) = %d, ciphertext is %d", len(tc.pt), EncryptedSize(int64(len(tc.pt))), len(got))
			}
			back, err := DecryptBytes(want, key, iv)
			if err != nil || !bytes.Equal(back, tc.pt) {
				t.Fatalf("DecryptBytes = %q, %v; want %q", back, err, tc.pt)
			}
			r, err := NewEncryptReader(bytes.NewReader(tc.pt), key, iv)
			if err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, r); !bytes.Equal(got, want) {
				t.Fatalf("encrypt reader = %x, want %x", got, want)
			}
		})
	}
}

func TestEncryptedSize(t *testing.T) {
	for _, tc := range []struct{ in, want int64 }{
		{0, 16}, {1, 16}, {15, 16}, {16, 32}, {17, 32}, {65535, 65536}, {65536, 65552}, {-1, -1},
	} {
		if got := EncryptedSize(tc.in); got != tc.want {
			t.Errorf("EncryptedSize(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestPadUnpad(t *testing.T) {
	for n := 0; n <= 48; n++ {
		in := bytes.Repeat([]byte{0xAB}, n)
		p := Pad(in)
		if len(p)%16 != 0 || len(p) <= n || len(p) > n+16 || !bytes.Equal(p[:n], in) {
			t.Fatalf("Pad(%d bytes) = %x", n, p)
		}
		if len(in) > 0 && &p[0] == &in[0] {
			t.Fatal("Pad must not alias its input")
		}
		u, err := Unpad(p)
		if err != nil || !bytes.Equal(u, in) {
			t.Fatalf("Unpad(Pad(%d bytes)) = %x, %v", n, u, err)
		}
	}
	block := func(tail ...byte) []byte { return append(bytes.Repeat([]byte{0x41}, 16-len(tail)), tail...) }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrNotBlockMultiple},
		{"15 bytes", make([]byte, 15), ErrNotBlockMultiple},
		{"17 bytes", make([]byte, 17), ErrNotBlockMultiple},
		{"pad 0", block(0), ErrBadPadding},
		{"pad 17", block(17), ErrBadPadding},
		{"pad 0xff", block(0xff), ErrBadPadding},
		{"pad 2 mismatched", block(1, 2), ErrBadPadding},
		{"pad 16 one wrong", append([]byte{15}, bytes.Repeat([]byte{16}, 15)...), ErrBadPadding},
		{"pad 1", block(1), nil},
		{"pad 3", block(3, 3, 3), nil},
		{"pad 16", bytes.Repeat([]byte{16}, 16), nil},
		{"two blocks pad 16", append(make([]byte, 16), bytes.Repeat([]byte{16}, 16)...), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unpad(tc.in)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Unpad = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseKeyIV(t *testing.T) {
	key32 := bytes.Repeat([]byte{7}, 32)
	secret := "c2VjcmV0LWtleS1tYXRlcmlhbC10aGF0LWlzLTMxYg==" // 31 bytes
	tests := []struct {
		name string
		fn   func(string) ([]byte, error)
		in   string
		want error
	}{
		{"key ok", ParseKey, base64.StdEncoding.EncodeToString(key32), nil},
		{"key ok with spaces", ParseKey, " " + base64.StdEncoding.EncodeToString(key32) + "\n", nil},
		{"key 31 bytes", ParseKey, secret, ErrKeySize},
		{"key 16 bytes", ParseKey, base64.StdEncoding.EncodeToString(key32[:16]), ErrKeySize},
		{"key empty", ParseKey, "", ErrKeySize},
		{"key bad base64", ParseKey, "c2VjcmV0!!!" + secret, ErrBase64},
		{"key url alphabet", ParseKey, strings.Repeat("_", 43) + "=", ErrBase64},
		{"iv ok", ParseIV, base64.StdEncoding.EncodeToString(key32[:16]), nil},
		{"iv 32 bytes", ParseIV, base64.StdEncoding.EncodeToString(key32), ErrIVSize},
		{"iv bad base64", ParseIV, "%%%%", ErrBase64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.fn(tc.in)
			if tc.want == nil {
				if err != nil || len(b) == 0 {
					t.Fatalf("got %d bytes, %v", len(b), err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(tc.in)) && tc.in != "" ||
				strings.Contains(err.Error(), "c2VjcmV0") {
				t.Fatalf("error %q contains the input", err)
			}
		})
	}
}

func TestNewIV(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		iv, err := NewIV()
		if err != nil || len(iv) != BlockSize {
			t.Fatalf("NewIV = %x, %v", iv, err)
		}
		if seen[string(iv)] {
			t.Fatal("NewIV repeated an IV")
		}
		seen[string(iv)] = true
	}
}

func TestTypedErrors(t *testing.T) {
	key, iv := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	good, err := EncryptBytes([]byte("sixteen byte msg and more"), key, iv)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)-1] ^= 0x55 // garbles the last block's plaintext
	wrongKey := bytes.Repeat([]byte{9}, 32)
	tests := []struct {
		name    string
		key, iv []byte
		ct      []byte
		want    error
	}{
		{"key 0", nil, iv, good, ErrKeySize},
		{"key 16", key[:16], iv, good, ErrKeySize},
		{"key 33", append(bytes.Clone(key), 0), iv, good, ErrKeySize},
		{"iv 0", key, nil, good, ErrIVSize},
		{"iv 15", key, iv[:15], good, ErrIVSize},
		{"iv 32", key, key, good, ErrIVSize},
		{"empty ciphertext", key, iv, nil, ErrNotBlockMultiple},
		{"truncated by 1", key, iv, good[:len(good)-1], ErrNotBlockMultiple},
		{"truncated to 15", key, iv, good[:15], ErrNotBlockMultiple},
		{"bad padding", key, iv, corrupt, ErrBadPadding},
		{"wrong key", wrongKey, iv, good, ErrBadPadding}, // fixed inputs: this wrong key gives invalid padding
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecryptBytes(tc.ct, tc.key, tc.iv)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecryptBytes: %v, want %v", err, tc.want)
			}
			r, err := NewDecryptReader(bytes.NewReader(tc.ct), tc.key, tc.iv)
			if err == nil {
				_, err = readAllErr(r)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("decrypt reader: %v, want %v", err, tc.want)
			}
			if tc.want == ErrKeySize || tc.want == ErrIVSize {
				if _, err := EncryptBytes([]byte("x"), tc.key, tc.iv); !errors.Is(err, tc.want) {
					t.Fatalf("EncryptBytes: %v, want %v", err, tc.want)
				}
				if _, err := NewEncryptReader(bytes.NewReader(nil), tc.key, tc.iv); !errors.Is(err, tc.want) {
					t.Fatalf("NewEncryptReader: %v, want %v", err, tc.want)
				}
			}
			if err != nil && len(tc.key) > 0 && bytes.Contains([]byte(err.Error()), tc.key) {
				t.Fatalf("error %q contains the key", err)
			}
		})
	}
	if _, err := NewEncryptReader(nil, key, iv); err == nil {
		t.Fatal("NewEncryptReader(nil source) did not fail")
	}
	if _, err := NewDecryptReader(nil, key, iv); err == nil {
		t.Fatal("NewDecryptReader(nil source) did not fail")
	}
}
