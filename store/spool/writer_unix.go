//go:build unix

package spool

import (
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// mapping is a spool file's shared memory mapping. The file is grown (ftruncate)
// ahead of the data in large steps, so appends make no system call; pages
// already written are released from the process every releaseStep bytes, so a
// busy worker's resident memory does not grow with its spool file.
type mapping struct {
	mem      []byte
	released int64 // mem[:released] has been madvise'd away
}

// barrier is touched atomically between a line's bytes and its newline: the
// atomic read-modify-write is a full memory barrier on every Go platform.
var barrier atomic.Uint32

const (
	// mapHeadroom is mapped beyond maxBytes so the line that crosses it fits
	// without a remap.
	mapHeadroom = 1 << 20
	// mapUnbounded is the first mapping of a writer that never rotates; it
	// doubles when full.
	mapUnbounded = 1 << 20
	releaseStep  = 1 << 20
)

func (m *mapping) open(f *os.File, maxBytes int64) error {
	size := int64(mapUnbounded)
	if maxBytes > 0 {
		size = maxBytes + mapHeadroom
	}
	return m.remap(f, size)
}

// remap maps f at size bytes (rounded up to whole pages), growing the file.
func (m *mapping) remap(f *os.File, size int64) error {
	page := int64(os.Getpagesize())
	size = (size + page - 1) / page * page
	if m.mem != nil {
		if err := unix.Munmap(m.mem); err != nil {
			return fmt.Errorf("munmap: %w", err)
		}
		m.mem = nil
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("grow file: %w", err)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("mmap: %w", err)
	}
	m.mem = mem
	m.released = 0
	return nil
}

// put copies line (ending in '\n') to offset off. The newline is stored last,
// after a full barrier, so a reader that sees it also sees the whole line.
func (m *mapping) put(f *os.File, off int64, line []byte) error {
	end := off + int64(len(line))
	if end > int64(len(m.mem)) {
		if err := m.remap(f, max(end, 2*int64(len(m.mem)))); err != nil {
			return err
		}
	}
	copy(m.mem[off:end-1], line[:len(line)-1])
	barrier.Add(1)
	m.mem[end-1] = '\n'
	if done := end &^ (releaseStep - 1); done-m.released >= releaseStep {
		// The pages stay in the page cache (dirty, written back by the kernel);
		// the process just stops counting them as resident.
		_ = unix.Madvise(m.mem[m.released:done], unix.MADV_DONTNEED)
		m.released = done
	}
	return nil
}

// close unmaps the file and cuts it to size, removing the padding.
func (m *mapping) close(f *os.File, size int64) error {
	if m.mem != nil {
		if err := unix.Munmap(m.mem); err != nil {
			return fmt.Errorf("munmap: %w", err)
		}
		m.mem = nil
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate: %w", err)
	}
	return nil
}
