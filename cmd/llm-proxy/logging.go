package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// Log file names inside LOG_DIR.
const (
	logFileAll   = "llm-proxy.log"       // every line the supervisor logs or re-emits
	logFileError = "llm-proxy-error.log" // WARN and above only
)

// levelTee sends every formatted line to stderr and the "all" file, and the lines at WARN
// or above also to the error file. hclog formats a line once and hands it to LevelWrite with
// its level, so the error file costs one extra write(2), not a second formatting pass.
type levelTee struct {
	mu     sync.Mutex // one line must not interleave with another, nor with a reopen
	stderr io.Writer
	dir    string
	all    *os.File
	errs   *os.File
}

var _ hclog.LevelWriter = (*levelTee)(nil)

func (t *levelTee) Write(p []byte) (int, error) {
	return t.LevelWrite(hclog.Info, p)
}

func (t *levelTee) LevelWrite(level hclog.Level, p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, err := t.stderr.Write(p)
	if _, ferr := t.all.Write(p); err == nil {
		err = ferr
	}
	if level >= hclog.Warn && level != hclog.Off {
		if _, werr := t.errs.Write(p); err == nil {
			err = werr
		}
	}
	return n, err
}

// openLogFiles opens (creating, appending, mode 0640) both log files in dir.
func openLogFiles(dir string) (all, errs *os.File, err error) {
	all, err = os.OpenFile(filepath.Join(dir, logFileAll), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, nil, fmt.Errorf("open log file: %w", err)
	}
	errs, err = os.OpenFile(filepath.Join(dir, logFileError), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		all.Close()
		return nil, nil, fmt.Errorf("open log file: %w", err)
	}
	return all, errs, nil
}

// reopen opens the log files by name again and switches to them. After logrotate renames
// llm-proxy.log, the gateway keeps writing into the renamed file until it reopens; reopening
// on a signal is what lets logrotate work without copytruncate, which loses the lines written
// between its copy and its truncate. If a file cannot be opened, the old ones stay in use.
func (t *levelTee) reopen() error {
	all, errs, err := openLogFiles(t.dir)
	if err != nil {
		return err
	}
	t.mu.Lock()
	oldAll, oldErrs := t.all, t.errs
	t.all, t.errs = all, errs
	t.mu.Unlock()
	return errors.Join(oldAll.Close(), oldErrs.Close())
}

func (t *levelTee) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return errors.Join(t.all.Close(), t.errs.Close())
}

// newRootLogger builds the supervisor's logger: stderr plus LOG_DIR/llm-proxy.log (all) and
// LOG_DIR/llm-proxy-error.log (WARN and above). The files are appended to, mode 0640, and
// the directory is created. On SIGUSR1 (where it exists) both files are reopened by name, for
// logrotate (see README "Logs"). The returned func stops that and closes the files.
func newRootLogger(level, dir string, stderr io.Writer) (hclog.Logger, func() error, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, fmt.Errorf("create log directory: %w", err)
	}
	all, errs, err := openLogFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	out := &levelTee{stderr: stderr, dir: dir, all: all, errs: errs}
	logger := hclog.New(&hclog.LoggerOptions{
		Name:  "llm-proxy",
		Level: levelOf(level),
		// Every line, the supervisor's own and the worker lines it re-emits, is scrubbed of
		// credentials before any of the three outputs sees it.
		Output: redactingWriter{next: out},
	})

	sig := make(chan os.Signal, 1)
	done := make(chan struct{})
	stopped := make(chan struct{})
	if len(reopenSignals) > 0 {
		signal.Notify(sig, reopenSignals...)
	}
	go func() {
		defer close(stopped)
		for {
			select {
			case <-sig:
				if err := out.reopen(); err != nil {
					logger.Error("cannot reopen the log files; still writing to the old ones", "dir", dir, "error", err)
					continue
				}
				logger.Info("log files reopened", "dir", dir)
			case <-done:
				return
			}
		}
	}()
	closeFn := func() error {
		signal.Stop(sig)
		close(done)
		<-stopped
		return out.close()
	}
	return logger, closeFn, nil
}

// newWorkerLogger is a worker's logger: JSON lines on stderr, which the supervisor parses and
// re-emits (and writes to the log files) at each line's own level.
//
// A worker ignores the log-reopen signal: `systemctl kill -s USR1` (or a kill of the
// process group) reaches the workers too, and its default action would end them.
func newWorkerLogger(level string, slot int, stderr io.Writer) hclog.Logger {
	signal.Ignore(reopenSignals...)
	return hclog.New(&hclog.LoggerOptions{
		Level: levelOf(level),
		// Scrubbed here too, so a worker run on its own (or a line the supervisor could not
		// parse) does not print a credential either.
		Output:     redactingWriter{next: stderr},
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
