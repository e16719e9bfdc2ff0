package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// Suffixes of the two states a spool file is in.
const (
	ActiveSuffix = ".spool"  // still being appended to by its worker
	SealedSuffix = ".sealed" // complete: nothing will be appended again
)

// ErrClosed is returned by Append after Close.
var ErrClosed = errors.New("spool: writer closed")

// ErrBadLine is returned by Append for a line that is not exactly one '\n'-terminated line.
var ErrBadLine = errors.New("spool: line must end in one newline and contain no other")

// Writer appends lines to the current file of one worker. It is safe for concurrent use.
type Writer struct {
	dir, name string
	maxBytes  int64 // <= 0: never rotate

	mu     sync.Mutex
	f      *os.File
	path   string // current file, with ActiveSuffix
	seq    int
	size   int64
	closed bool
}

// Create opens dir/<name>.<seq>.spool for appending, creating dir with mode 0700. name is
// the worker id, unique per process; seq starts after the highest one already in dir for
// that name, so a reused name never appends to a file a reader may have finished with.
// A file is sealed and the next one started once it holds maxBytes or more (<= 0: never).
func Create(dir, name string, maxBytes int64) (*Writer, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return nil, fmt.Errorf("spool: invalid name %q", name)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: create dir: %w", err)
	}
	seq, err := nextSeq(dir, name)
	if err != nil {
		return nil, err
	}
	w := &Writer{dir: dir, name: name, maxBytes: maxBytes, seq: seq}
	if err := w.open(); err != nil {
		return nil, err
	}
	return w, nil
}

// nextSeq returns one more than the highest seq of name's files in dir (0 when none).
func nextSeq(dir, name string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("spool: read dir: %w", err)
	}
	next := 0
	prefix := name + "."
	for _, e := range entries {
		base, ok := BaseName(e.Name())
		if !ok || !strings.HasPrefix(base, prefix) {
			continue
		}
		n, err := strconv.Atoi(base[len(prefix):])
		if err == nil && n >= next {
			next = n + 1
		}
	}
	return next, nil
}

// BaseName strips ActiveSuffix or SealedSuffix from a file name; ok is false for any
// other file. The base is how readers key their progress through a file.
func BaseName(file string) (base string, ok bool) {
	if b, found := strings.CutSuffix(file, ActiveSuffix); found && b != "" {
		return b, true
	}
	if b, found := strings.CutSuffix(file, SealedSuffix); found && b != "" {
		return b, true
	}
	return "", false
}

// WriterID returns the worker id part of a base name ("<worker id>.<seq>").
func WriterID(base string) string {
	if i := strings.LastIndexByte(base, '.'); i >= 0 {
		return base[:i]
	}
	return base
}

func (w *Writer) open() error {
	// Zero-padded so a directory listing sorts in write order.
	w.path = filepath.Join(w.dir, fmt.Sprintf("%s.%06d%s", w.name, w.seq, ActiveSuffix))
	f, err := os.OpenFile(w.path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", w.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("spool: stat %s: %w", w.path, err)
	}
	w.f, w.size = f, st.Size()
	return nil
}

// Append writes line, which must end in '\n' and hold no other newline, with one write(2).
// O_APPEND plus the mutex keep lines whole; there is no fsync because the record only has
// to survive the process, not the machine. When the file reaches maxBytes it is sealed and
// a new one started; a failure to start the next file is returned but the line is written.
func (w *Writer) Append(line []byte) error {
	n := len(line)
	if n == 0 || line[n-1] != '\n' || bytes.IndexByte(line[:n-1], '\n') >= 0 {
		return ErrBadLine
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	written, err := w.f.Write(line)
	w.size += int64(written)
	if err != nil {
		return fmt.Errorf("spool: append: %w", err)
	}
	if w.maxBytes > 0 && w.size >= w.maxBytes {
		return w.rotate()
	}
	return nil
}

// rotate opens the next file before sealing the current one, so a failed open leaves the
// writer appending to a valid file rather than to none.
func (w *Writer) rotate() error {
	old, oldPath := w.f, w.path
	w.seq++
	if err := w.open(); err != nil {
		w.seq--
		w.f, w.path = old, oldPath
		return err
	}
	return sealFile(old, oldPath)
}

func sealFile(f *os.File, path string) error {
	sealed := strings.TrimSuffix(path, ActiveSuffix) + SealedSuffix
	if err := os.Rename(path, sealed); err != nil {
		f.Close()
		return fmt.Errorf("spool: seal %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("spool: close %s: %w", sealed, err)
	}
	return nil
}

// Path returns the file currently appended to.
func (w *Writer) Path() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.path
}

// Close seals the current file (an empty one is removed instead). Later Appends fail.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.size == 0 {
		w.f.Close()
		if err := os.Remove(w.path); err != nil {
			return fmt.Errorf("spool: remove empty %s: %w", w.path, err)
		}
		return nil
	}
	return sealFile(w.f, w.path)
}
