//go:build unix

package shm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive advisory lock on f, waiting for it.
func lockFile(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_EX) }

// unlockFile releases lockFile's lock.
func unlockFile(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_UN) }

// mapFile maps the first size bytes of f shared and writable.
func mapFile(f *os.File, size int) ([]byte, error) {
	return unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
}

// unmapFile undoes mapFile.
func unmapFile(mem []byte) error { return unix.Munmap(mem) }

// create writes a fresh region to a temporary file and renames it into place, so a
// process still mapping an old file (from before a reboot or a layout change) never sees
// a half-initialised header, and nothing mapped is ever truncated under anyone (which
// would SIGBUS them).
func create(path string, size int, boot int64) ([]byte, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new*")
	if err != nil {
		return nil, fmt.Errorf("shm: create: %w", err)
	}
	defer tmp.Close()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return nil, fmt.Errorf("shm: create: %w", err)
	}
	// Truncate makes a sparse file: pages cost memory only once a slot on them is used.
	if err := tmp.Truncate(int64(size)); err != nil {
		return nil, fmt.Errorf("shm: size file: %w", err)
	}
	mem, err := mapFile(tmp, size)
	if err != nil {
		return nil, fmt.Errorf("shm: mmap: %w", err)
	}
	h := (*[pageSize / 8]int64)(unsafe.Pointer(&mem[0]))
	h[hVersion] = version
	h[hSize] = int64(size)
	h[hSlots] = int64(uint64(size-pageSize) / slotBytes)
	h[hCounters] = SlotCounters
	h[hBoot] = boot
	atomic.StoreInt64(&h[hMagic], int64(uint64(magic)))
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = unmapFile(mem)
		return nil, fmt.Errorf("shm: install: %w", err)
	}
	ok = true
	return mem, nil
}

// alive reports whether pid exists and, when start is known, is the same process that
// registered (not a later process that got the recycled pid).
func alive(pid, start int64) bool {
	if err := unix.Kill(int(pid), 0); errors.Is(err, unix.ESRCH) {
		return false
	}
	if start <= 0 {
		return true
	}
	got := procStart(int(pid))
	return got <= 0 || got == start
}

// procStart returns the process's start time in clock ticks since boot (field 22 of
// /proc/<pid>/stat), or 0 when it cannot be read.
func procStart(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0
	}
	v, err := strconv.ParseInt(string(fields[19]), 10, 64)
	if err != nil {
		return 0
	}
	return v
}
