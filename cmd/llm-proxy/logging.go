package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// Log file names inside LOG_DIR.
const (
	logFileAll   = "llm-proxy.log"       // every line the supervisor logs or re-emits
	logFileError = "llm-proxy-error.log" // WARN and above only
)

// levelTee sends every formatted line to all and the lines at WARN or above also to errs.
// hclog formats a line once and hands it to LevelWrite with its level, so the error file
// costs one extra write(2), not a second formatting pass.
type levelTee struct {
	mu   sync.Mutex // one line must not interleave with another in any of the files
	all  io.Writer
	errs io.Writer
}

var _ hclog.LevelWriter = (*levelTee)(nil)

func (t *levelTee) Write(p []byte) (int, error) {
	return t.LevelWrite(hclog.Info, p)
}

func (t *levelTee) LevelWrite(level hclog.Level, p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.all.Write(p)
	if level >= hclog.Warn && level != hclog.Off {
		if _, werr := t.errs.Write(p); err == nil {
			err = werr
		}
	}
	return n, err
}

// newRootLogger builds the supervisor's logger: stderr plus LOG_DIR/llm-proxy.log (all) and
// LOG_DIR/llm-proxy-error.log (WARN and above). The files are appended to, mode 0640, and
// the directory is created. The returned func closes the files.
func newRootLogger(level, dir string, stderr io.Writer) (hclog.Logger, func() error, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("create log directory: %w", err)
	}
	all, err := os.OpenFile(filepath.Join(dir, logFileAll), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open log file: %w", err)
	}
	errs, err := os.OpenFile(filepath.Join(dir, logFileError), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		all.Close()
		return nil, nil, fmt.Errorf("open log file: %w", err)
	}
	out := &levelTee{all: io.MultiWriter(stderr, all), errs: errs}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:   "llm-proxy",
		Level:  levelOf(level),
		Output: out,
	})
	closeFn := func() error {
		err1 := all.Close()
		err2 := errs.Close()
		if err1 != nil {
			return err1
		}
		return err2
	}
	return logger, closeFn, nil
}

// newWorkerLogger is a worker's logger: JSON lines on stderr, which the supervisor parses and
// re-emits (and writes to the log files) at each line's own level.
func newWorkerLogger(level string, slot int, stderr io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Level:      levelOf(level),
		Output:     stderr,
		JSONFormat: true,
	}).With("worker_slot", slot)
}

// levelOf parses a validated LOG_LEVEL ("DEBUG", "INFO", "WARN", "ERROR").
func levelOf(s string) hclog.Level {
	if l := hclog.LevelFromString(s); l != hclog.NoLevel {
		return l
	}
	return hclog.Info
}
