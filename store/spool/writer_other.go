//go:build !unix

package spool

import (
	"fmt"
	"os"
)

// mapping is a no-op where the spool is written with plain writes: one
// WriteAt per line, at the end of the file.
type mapping struct{}

func (m *mapping) open(*os.File, int64) error { return nil }

func (m *mapping) put(f *os.File, off int64, line []byte) error {
	if _, err := f.WriteAt(line, off); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (m *mapping) close(*os.File, int64) error { return nil }
