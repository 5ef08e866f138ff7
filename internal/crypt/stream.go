package crypt

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
)

// BufferSize is the size of the internal buffer of the readers returned by NewEncryptReader and
// NewDecryptReader: 64 KiB per reader, allocated on the first Read into a slice shorter than 32 bytes
// or the first WriteTo (which io.Copy uses). Reads into a slice of 32 bytes or more work in place in
// the caller's slice and never allocate it, so a reader's memory is at most BufferSize plus about
// 100 bytes of state and the AES key schedule, whatever the stream length.
const BufferSize = 64 << 10

// minDirect is the smallest Read slice worked on in place: room for a held-back partial block and at
// least one more whole block.
const minDirect = 2 * BlockSize

// maxEmptyReads is how many successive (0, nil) reads of the source are tolerated before
// io.ErrNoProgress, as in bufio.
const maxEmptyReads = 100

var errInvalidRead = errors.New("crypt: source returned an invalid count from Read")

// NewEncryptReader returns a reader of the AES-256-CBC ciphertext of r's content with PKCS#7 padding
// (EncryptedSize(n) bytes for n bytes of plaintext, no IV prefix). It streams in constant memory (see
// BufferSize), accepts any Read size, and returns r's errors other than io.EOF unchanged, after the
// ciphertext of the data read before them. The returned reader also implements io.WriterTo, which
// io.Copy uses to encrypt in BufferSize chunks without an extra copy. key must be 32 bytes
// (ErrKeySize) and iv 16 bytes (ErrIVSize); use a fresh NewIV for every stream.
func NewEncryptReader(r io.Reader, key, iv []byte) (io.Reader, error) {
	b, err := newBlock("new encrypt reader", key, iv)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, errors.New("crypt: new encrypt reader: nil source")
	}
	return &encryptReader{src: r, mode: cipher.NewCBCEncrypter(b, iv)}, nil
}

// encryptReader encrypts whole blocks as soon as they arrive, in place in the output slice, and keeps
// only the partial block (< 16 bytes) between reads.
type encryptReader struct {
	src          io.Reader
	mode         cipher.BlockMode
	buf          []byte          // BufferSize bytes, allocated on first use by short Reads and WriteTo
	out          []byte          // ciphertext produced but not yet handed out (in buf or final)
	carry        [BlockSize]byte // plaintext tail shorter than a block
	nc           int             // bytes used in carry
	final        [BlockSize]byte // padded final block that did not fit the caller's slice
	finalPending bool
	err          error // sticky: io.EOF after the final block, or the source's error
}

var _ io.WriterTo = (*encryptReader)(nil)

func (e *encryptReader) buffer() []byte {
	if e.buf == nil {
		e.buf = make([]byte, BufferSize)
	}
	return e.buf
}

// fill reads from the source into p (len(p) >= minDirect) after the carried partial block, encrypts
// the whole blocks in place and returns how many bytes of p are ciphertext. At the end of the source
// it appends the padded final block, to p if it fits, else to e.final, and returns io.EOF.
func (e *encryptReader) fill(p []byte) (int, error) {
	for empty := 0; ; {
		c := copy(p, e.carry[:e.nc])
		n, err := e.src.Read(p[c:])
		if n < 0 || n > len(p)-c {
			return 0, errInvalidRead
		}
		t := c + n
		full := t &^ (BlockSize - 1)
		e.nc = copy(e.carry[:], p[full:t])
		e.mode.CryptBlocks(p[:full], p[:full])
		if err == io.EOF {
			fin := e.final[:]
			room := len(p)-full >= BlockSize
			if room {
				fin = p[full : full+BlockSize]
			}
			copy(fin, e.carry[:e.nc])
			pad := byte(BlockSize - e.nc)
			for i := e.nc; i < BlockSize; i++ {
				fin[i] = pad
			}
			e.mode.CryptBlocks(fin, fin)
			e.nc = 0
			if room {
				full += BlockSize
			} else {
				e.finalPending = true
			}
			return full, io.EOF
		}
		if err != nil || full > 0 {
			return full, err
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty >= maxEmptyReads {
			return 0, io.ErrNoProgress
		}
	}
}

// pending moves a final block that did not fit into out, and reports whether out has bytes.
func (e *encryptReader) pending() bool {
	if len(e.out) == 0 && e.finalPending {
		e.out, e.finalPending = e.final[:], false
	}
	return len(e.out) > 0
}

// Read implements io.Reader. It returns ciphertext before any source error; the error (or io.EOF)
// comes on the next call and is repeated on every later call.
func (e *encryptReader) Read(p []byte) (int, error) {
	if e.pending() {
		n := copy(p, e.out)
		e.out = e.out[n:]
		return n, nil
	}
	if e.err != nil {
		return 0, e.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	if len(p) >= minDirect {
		n, e.err = e.fill(p)
	} else {
		buf := e.buffer()
		var m int
		m, e.err = e.fill(buf)
		n = copy(p, buf[:m])
		e.out = buf[n:m]
	}
	if n > 0 {
		return n, nil
	}
	return 0, e.err
}

// WriteTo implements io.WriterTo: it encrypts the rest of the stream in BufferSize chunks into w.
func (e *encryptReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if e.pending() {
			n, err := writeOut(w, e.out)
			total += int64(n)
			e.out = e.out[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if e.err != nil {
			if e.err == io.EOF {
				return total, nil
			}
			return total, e.err
		}
		buf := e.buffer()
		var m int
		m, e.err = e.fill(buf)
		e.out = buf[:m]
	}
}

// writeOut writes b to w, turning short and invalid writes into errors as io.Copy does.
func writeOut(w io.Writer, b []byte) (int, error) {
	n, err := w.Write(b)
	if n < 0 || n > len(b) {
		return 0, errors.New("crypt: writer returned an invalid count from Write")
	}
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return n, err
}

// NewDecryptReader returns a reader of the plaintext of r's AES-256-CBC ciphertext (no IV prefix),
// with the PKCS#7 padding checked and removed. It streams in constant memory (see BufferSize), accepts
// any Read size and holds back the last block until r reports io.EOF. At the end it returns
// ErrNotBlockMultiple (wrapped) when the ciphertext is empty or not a multiple of 16 bytes (a truncated
// blob) and ErrBadPadding when the final block's padding is invalid (corruption, or a wrong key or IV).
// Those errors only surface at the end of the stream: a caller must discard everything it has read
// when Read returns an error other than io.EOF. r's own errors are returned unchanged. The returned
// reader also implements io.WriterTo.
func NewDecryptReader(r io.Reader, key, iv []byte) (io.Reader, error) {
	b, err := newBlock("new decrypt reader", key, iv)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, errors.New("crypt: new decrypt reader: nil source")
	}
	return &decryptReader{src: r, mode: cipher.NewCBCDecrypter(b, iv)}, nil
}

// decryptReader decrypts in place in the output slice, keeping back the last 1 to 16 bytes of
// ciphertext read (the block that may be the final, padded one, or a partial block).
type decryptReader struct {
	src  io.Reader
	mode cipher.BlockMode
	buf  []byte // BufferSize bytes, allocated on first use by short Reads and WriteTo
	out  []byte // plaintext produced but not yet handed out (in buf)
	hold [BlockSize]byte
	nh   int   // bytes used in hold
	err  error // sticky: io.EOF at the end, a format error, or the source's error
}

var _ io.WriterTo = (*decryptReader)(nil)

func (d *decryptReader) buffer() []byte {
	if d.buf == nil {
		d.buf = make([]byte, BufferSize)
	}
	return d.buf
}

// fill reads from the source into p (len(p) >= minDirect) after the held-back bytes, decrypts every
// whole block but the last in place, and returns how many bytes of p are plaintext. At the end of the
// source it decrypts and unpads the final block and returns io.EOF.
func (d *decryptReader) fill(p []byte) (int, error) {
	for empty := 0; ; {
		c := copy(p, d.hold[:d.nh])
		n, err := d.src.Read(p[c:])
		if n < 0 || n > len(p)-c {
			return 0, errInvalidRead
		}
		t := c + n
		if err == io.EOF {
			d.nh = 0
			// Everything before hold was consumed in whole blocks, so t%16 is the stream length mod 16,
			// and t == 0 only for an empty stream.
			if t == 0 || t%BlockSize != 0 {
				return 0, fmt.Errorf("crypt: decrypt stream: ciphertext truncated or empty: %w", ErrNotBlockMultiple)
			}
			d.mode.CryptBlocks(p[:t], p[:t])
			pad, ok := padLen(p[t-BlockSize : t])
			if !ok {
				return 0, fmt.Errorf("crypt: decrypt stream: %w", ErrBadPadding)
			}
			return t - pad, io.EOF
		}
		dd := 0
		if t > 0 {
			dd = (t - 1) &^ (BlockSize - 1) // keep 1..16 bytes back
		}
		d.nh = copy(d.hold[:], p[dd:t])
		d.mode.CryptBlocks(p[:dd], p[:dd])
		if err != nil || dd > 0 {
			return dd, err
		}
		if n > 0 {
			empty = 0
		} else if empty++; empty >= maxEmptyReads {
			return 0, io.ErrNoProgress
		}
	}
}

// Read implements io.Reader. It returns plaintext before any error; the error (or io.EOF) comes on
// the next call and is repeated on every later call.
func (d *decryptReader) Read(p []byte) (int, error) {
	if len(d.out) > 0 {
		n := copy(p, d.out)
		d.out = d.out[n:]
		return n, nil
	}
	if d.err != nil {
		return 0, d.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	if len(p) >= minDirect {
		n, d.err = d.fill(p)
	} else {
		buf := d.buffer()
		var m int
		m, d.err = d.fill(buf)
		n = copy(p, buf[:m])
		d.out = buf[n:m]
	}
	if n > 0 {
		return n, nil
	}
	return 0, d.err
}

// WriteTo implements io.WriterTo: it decrypts the rest of the stream in BufferSize chunks into w.
// On a format error the plaintext already written to w must be discarded.
func (d *decryptReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(d.out) > 0 {
			n, err := writeOut(w, d.out)
			total += int64(n)
			d.out = d.out[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if d.err != nil {
			if d.err == io.EOF {
				return total, nil
			}
			return total, d.err
		}
		buf := d.buffer()
		var m int
		m, d.err = d.fill(buf)
		d.out = buf[:m]
	}
}
