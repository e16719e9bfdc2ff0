//go:build windows

package shm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/windows"
)

// On Windows the region is the same file shared through a named-file mapping
// (CreateFileMapping + MapViewOfFile): every process that maps the file sees the same
// physical pages, as with MAP_SHARED, so the atomics stay exact across workers.

// lockFile takes an exclusive lock on the first byte of f, waiting for it.
func lockFile(f *os.File) error {
	var ol windows.Overlapped
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK, 0, 1, 0, &ol)
}

// unlockFile releases lockFile's lock.
func unlockFile(f *os.File) error {
	var ol windows.Overlapped
	return windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}

// mapFile maps the first size bytes of f shared and writable.
func mapFile(f *os.File, size int) ([]byte, error) {
	h, err := windows.CreateFileMapping(windows.Handle(f.Fd()), nil, windows.PAGE_READWRITE,
		uint32(uint64(size)>>32), uint32(size), nil)
	if err != nil {
		return nil, fmt.Errorf("CreateFileMapping: %w", err)
	}
	// A view keeps its mapping object alive, so the handle is not needed after this.
	defer windows.CloseHandle(h) //nolint:errcheck // nothing to do about a failed close
	addr, err := windows.MapViewOfFile(h, windows.FILE_MAP_READ|windows.FILE_MAP_WRITE, 0, 0, uintptr(size))
	if err != nil {
		return nil, fmt.Errorf("MapViewOfFile: %w", err)
	}
	// addr is memory outside the Go heap that stays mapped until unmapFile; reading it
	// through a pointer-typed copy is what keeps vet's uintptr rule satisfied.
	p := *(*unsafe.Pointer)(unsafe.Pointer(&addr))
	return unsafe.Slice((*byte)(p), size), nil
}

// unmapFile undoes mapFile.
func unmapFile(mem []byte) error {
	return windows.UnmapViewOfFile(uintptr(unsafe.Pointer(&mem[0])))
}

// create writes a fresh region to a temporary file and renames it into place, like the
// unix version. Windows refuses to rename a file that is open (Go opens files without
// FILE_SHARE_DELETE), so the header is written with WriteAt, the file is closed and
// renamed, and only then mapped; reads through a mapping are coherent with earlier writes
// to the same file. Replacing a file that another process still maps fails; Open then
// returns the error instead of pulling the counters from under that process.
func create(path string, size int, boot int64) ([]byte, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".new*")
	if err != nil {
		return nil, fmt.Errorf("shm: create: %w", err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if err := tmp.Truncate(int64(size)); err != nil {
		return nil, fmt.Errorf("shm: size file: %w", err)
	}
	var h [pageSize / 8]int64
	h[hMagic] = int64(uint64(magic))
	h[hVersion] = version
	h[hSize] = int64(size)
	h[hSlots] = int64(uint64(size-pageSize) / slotBytes)
	h[hCounters] = SlotCounters
	h[hBoot] = boot
	if _, err := tmp.WriteAt(unsafe.Slice((*byte)(unsafe.Pointer(&h[0])), pageSize), 0); err != nil {
		return nil, fmt.Errorf("shm: write header: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("shm: create: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return nil, fmt.Errorf("shm: install: %w", err)
	}
	ok = true
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: open: %w", err)
	}
	defer f.Close()
	mem, err := mapFile(f, size)
	if err != nil {
		return nil, fmt.Errorf("shm: mmap: %w", err)
	}
	return mem, nil
}

// stillActive is GetExitCodeProcess's code for a process that has not exited.
const stillActive = 259

// alive reports whether pid exists and, when start is known, is the same process that
// registered (not a later process that got the recycled pid).
func alive(pid, start int64) bool {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		// No such process; access denied means it exists but belongs to someone else.
		return errors.Is(err, windows.ERROR_ACCESS_DENIED)
	}
	defer windows.CloseHandle(h) //nolint:errcheck // nothing to do about a failed close
	var code uint32
	if err := windows.GetExitCodeProcess(h, &code); err == nil && code != stillActive {
		return false
	}
	if start <= 0 {
		return true
	}
	got := processCreation(h)
	return got <= 0 || got == start
}

// procStart returns the process's creation time (100 ns units since 1601), or 0 when it
// cannot be read.
func procStart(pid int) int64 {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return 0
	}
	defer windows.CloseHandle(h) //nolint:errcheck // nothing to do about a failed close
	return processCreation(h)
}

func processCreation(h windows.Handle) int64 {
	var created, exited, kernel, user windows.Filetime
	if err := windows.GetProcessTimes(h, &created, &exited, &kernel, &user); err != nil {
		return 0
	}
	return int64(created.HighDateTime)<<32 | int64(created.LowDateTime)
}
