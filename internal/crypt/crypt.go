package crypt

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Sizes of the AES-256-CBC parameters.
const (
	// KeySize is the AES-256 key length in bytes.
	KeySize = 32
	// BlockSize is the AES block length in bytes; it is also the IV length and the PKCS#7 block size.
	BlockSize = aes.BlockSize
)

// Sentinel errors. Errors returned by this package wrap them with context (never with key material);
// test them with errors.Is.
var (
	// ErrKeySize reports a key that is not KeySize (32) bytes long.
	ErrKeySize = errors.New("key is not 32 bytes")
	// ErrIVSize reports an IV that is not BlockSize (16) bytes long.
	ErrIVSize = errors.New("IV is not 16 bytes")
	// ErrNotBlockMultiple reports a ciphertext (or padded plaintext) whose length is not a positive
	// multiple of BlockSize. An empty ciphertext is invalid: PKCS#7 always adds at least one byte.
	ErrNotBlockMultiple = errors.New("length is not a positive multiple of 16")
	// ErrBadPadding reports a final block whose PKCS#7 padding is invalid; with CBC this is also what
	// a wrong key or IV usually produces.
	ErrBadPadding = errors.New("invalid PKCS#7 padding")
	// ErrBase64 reports a key, IV or message part that is not valid standard base64.
	ErrBase64 = errors.New("invalid base64")
)

// NewIV returns a fresh random IV of BlockSize bytes from crypto/rand. Use a new IV for every blob and
// every sealed message.
func NewIV() ([]byte, error) {
	iv := make([]byte, BlockSize)
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("crypt: new IV: %w", err)
	}
	return iv, nil
}

// ParseKey decodes a base64 (standard alphabet, padded) AES-256 key, such as the EncryptionKey of
// ProvisionMigrationContainers, and checks that it is KeySize bytes. Surrounding white space is ignored.
// The error never contains the input.
func ParseKey(b64 string) ([]byte, error) {
	key, err := decodeBase64(b64)
	if err != nil {
		return nil, fmt.Errorf("crypt: parse key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("crypt: parse key: %w (decoded %d bytes)", ErrKeySize, len(key))
	}
	return key, nil
}

// ParseIV decodes a base64 (standard alphabet, padded) IV, such as the blob metadata "IV" or the
// envelope IV, and checks that it is BlockSize bytes. Surrounding white space is ignored.
func ParseIV(b64 string) ([]byte, error) {
	iv, err := decodeBase64(b64)
	if err != nil {
		return nil, fmt.Errorf("crypt: parse IV: %w", err)
	}
	if len(iv) != BlockSize {
		return nil, fmt.Errorf("crypt: parse IV: %w (decoded %d bytes)", ErrIVSize, len(iv))
	}
	return iv, nil
}

// decodeBase64 decodes standard base64; its error names the offending offset, never the input.
func decodeBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("%w at byte %d", ErrBase64, int64(ce))
		}
		return nil, ErrBase64
	}
	return b, nil
}

// EncryptedSize returns the ciphertext length of a plaintext of plainSize bytes: PKCS#7 adds 1 to 16
// bytes, so the result is plainSize + 16 - plainSize%16. It returns -1 for a negative plainSize.
func EncryptedSize(plainSize int64) int64 {
	if plainSize < 0 {
		return -1
	}
	return plainSize + BlockSize - plainSize%BlockSize
}

// Pad returns a new slice holding b followed by its PKCS#7 padding to a multiple of BlockSize
// (1 to 16 bytes, each equal to the padding length). b is not modified.
func Pad(b []byte) []byte {
	n := BlockSize - len(b)%BlockSize
	out := make([]byte, len(b)+n)
	copy(out, b)
	for i := len(b); i < len(out); i++ {
		out[i] = byte(n)
	}
	return out
}

// Unpad checks the PKCS#7 padding of b and returns b without it (a sub-slice, not a copy). b must be a
// positive multiple of BlockSize long (ErrNotBlockMultiple); invalid padding gives ErrBadPadding. The
// padding is checked in constant time.
func Unpad(b []byte) ([]byte, error) {
	if len(b) == 0 || len(b)%BlockSize != 0 {
		return nil, fmt.Errorf("crypt: unpad %d bytes: %w", len(b), ErrNotBlockMultiple)
	}
	n, ok := padLen(b[len(b)-BlockSize:])
	if !ok {
		return nil, fmt.Errorf("crypt: unpad: %w", ErrBadPadding)
	}
	return b[:len(b)-n], nil
}

// padLen returns the PKCS#7 padding length of the final block last (exactly BlockSize bytes) and
// whether the padding is valid, without branching on the block's contents.
func padLen(last []byte) (int, bool) {
	_ = last[BlockSize-1]
	n := int(last[BlockSize-1])
	good := subtle.ConstantTimeLessOrEq(1, n) & subtle.ConstantTimeLessOrEq(n, BlockSize)
	for i := 0; i < BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(BlockSize, i+n) // i >= BlockSize-n
		same := subtle.ConstantTimeByteEq(last[i], byte(n))
		good &= 1 - inPad&(1-same)
	}
	return n, good == 1
}

// newBlock checks the key and IV sizes and returns the AES-256 block cipher.
func newBlock(op string, key, iv []byte) (cipher.Block, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("crypt: %s: %w (got %d bytes)", op, ErrKeySize, len(key))
	}
	if len(iv) != BlockSize {
		return nil, fmt.Errorf("crypt: %s: %w (got %d bytes)", op, ErrIVSize, len(iv))
	}
	b, err := aes.NewCipher(key)
	if err != nil { // unreachable with a 32-byte key; keep the key out of the message anyway
		return nil, fmt.Errorf("crypt: %s: %w", op, ErrKeySize)
	}
	return b, nil
}

// EncryptBytes returns the AES-256-CBC ciphertext of the PKCS#7-padded plaintext (EncryptedSize(len)
// bytes, no IV prefix). It is meant for small payloads; stream files with NewEncryptReader.
func EncryptBytes(plaintext, key, iv []byte) ([]byte, error) {
	b, err := newBlock("encrypt", key, iv)
	if err != nil {
		return nil, err
	}
	out := Pad(plaintext)
	cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, out)
	return out, nil
}

// DecryptBytes decrypts an AES-256-CBC ciphertext (no IV prefix) and strips its PKCS#7 padding. It is
// meant for small payloads; stream files with NewDecryptReader. ciphertext is not modified.
func DecryptBytes(ciphertext, key, iv []byte) ([]byte, error) {
	b, err := newBlock("decrypt", key, iv)
	if err != nil {
		return nil, err
	}
	if len(ciphertext) == 0 || len(ciphertext)%BlockSize != 0 {
		return nil, fmt.Errorf("crypt: decrypt %d bytes: %w", len(ciphertext), ErrNotBlockMultiple)
	}
	out := make([]byte, len(ciphertext))
	cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, ciphertext)
	n, ok := padLen(out[len(out)-BlockSize:])
	if !ok {
		return nil, fmt.Errorf("crypt: decrypt: %w", ErrBadPadding)
	}
	return out[:len(out)-n], nil
}

// cbcNoPad encrypts (or decrypts) data in place with raw AES-256-CBC, without padding, and returns it.
// data must be a multiple of BlockSize long (it may be empty). The tests use it for the NIST vectors.
func cbcNoPad(encrypt bool, key, iv, data []byte) ([]byte, error) {
	op := "decrypt"
	if encrypt {
		op = "encrypt"
	}
	b, err := newBlock(op, key, iv)
	if err != nil {
		return nil, err
	}
	if len(data)%BlockSize != 0 {
		return nil, fmt.Errorf("crypt: %s %d bytes: %w", op, len(data), ErrNotBlockMultiple)
	}
	if encrypt {
		cipher.NewCBCEncrypter(b, iv).CryptBlocks(data, data)
	} else {
		cipher.NewCBCDecrypter(b, iv).CryptBlocks(data, data)
	}
	return data, nil
}
