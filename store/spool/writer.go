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
//
// On unix the file is written through a shared memory mapping (writer_unix.go):
// an append is a copy, not a write(2), and the bytes are in the page cache, so a
// killed process loses nothing it appended. The file is grown ahead of the data,
// so an active file, or the file of a writer that was killed, ends in NUL
// padding: readers stop at a NUL where a line would start (see Padding). A
// sealed file holds exactly its lines.
type Writer struct {
	dir, name string
	maxBytes  int64 // <= 0: never rotate

	mu     sync.Mutex
	f      *os.File
	path   string // current file, with ActiveSuffix
	seq    int
	size   int64
	closed bool
	mm     mapping // the file's memory mapping (unix); see writer_unix.go
}

// Padding reports whether the bytes a reader is about to take as a line are the
// NUL padding after an active file's last line: the end of its data for now.
func Padding(b []byte) bool { return len(b) > 0 && b[0] == 0 }

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
	// A new file every time (seq is always past the existing ones), so it starts empty.
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("spool: open %s: %w", w.path, err)
	}
	w.f, w.size = f, 0
	if err := w.mm.open(f, w.maxBytes); err != nil {
		f.Close()
		os.Remove(w.path)
		return fmt.Errorf("spool: map %s: %w", w.path, err)
	}
	return nil
}

// Append writes line, which must end in '\n' and hold no other newline. The mutex keeps
// lines whole; there is no fsync because the record only has to survive the process, not
// the machine. When the file reaches maxBytes it is sealed and a new one started; a failure
// to start the next file is returned but the line is written.
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
	if err := w.mm.put(w.f, w.size, line); err != nil {
		return fmt.Errorf("spool: append: %w", err)
	}
	w.size += int64(n)
	if w.maxBytes > 0 && w.size >= w.maxBytes {
		return w.rotate()
	}
	return nil
}

// rotate opens the next file before sealing the current one, so a failed open leaves the
// writer appending to a valid file rather than to none.
func (w *Writer) rotate() error {
	old, oldPath, oldSize, oldMap := w.f, w.path, w.size, w.mm
	w.seq++
	w.mm = mapping{}
	if err := w.open(); err != nil {
		w.seq--
		w.f, w.path, w.size, w.mm = old, oldPath, oldSize, oldMap
		return err
	}
	return sealFile(old, oldPath, oldSize, &oldMap)
}

// sealFile unmaps f, cuts its padding off and renames it to SealedSuffix.
func sealFile(f *os.File, path string, size int64, mm *mapping) error {
	if err := mm.close(f, size); err != nil {
		f.Close()
		return fmt.Errorf("spool: seal %s: %w", path, err)
	}
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
		_ = w.mm.close(w.f, 0)
		w.f.Close()
		if err := os.Remove(w.path); err != nil {
			return fmt.Errorf("spool: remove empty %s: %w", w.path, err)
		}
		return nil
	}
	return sealFile(w.f, w.path, w.size, &w.mm)
}
