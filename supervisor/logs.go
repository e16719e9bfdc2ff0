package supervisor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"

	"github.com/hashicorp/go-hclog"
)

// maxLogLine caps one re-emitted line; the rest of a longer line is dropped
// so a runaway writer cannot make the supervisor buffer without bound.
const maxLogLine = 64 << 10

// crashPrefixes start the lines Go's runtime writes when a process dies of a
// panic or a fatal error. Such a line and every plain line after it (the
// goroutine dump) are re-emitted at ERROR so the trace lands in the error log.
var crashPrefixes = [][]byte{
	[]byte("panic:"),
	[]byte("fatal error:"),
	[]byte("goroutine "),
}

// fatalPrefix starts the one plain line a worker prints when it exits with an
// error (cmd/llm-proxy realMain), e.g. a port it could not bind.
var fatalPrefix = []byte("llm-proxy: ")

// Keys of hclog's JSON format that are not arguments.
const (
	keyLevel     = "@level"
	keyMessage   = "@message"
	keyModule    = "@module"
	keyTimestamp = "@timestamp"
	keyCaller    = "@caller"
)

// lineEmitter re-emits one stream (stdout or stderr) of one worker.
type lineEmitter struct {
	log hclog.Logger
	pid int
	// crashing is set once a crash trace has started on this stream.
	crashing bool
}

// forward reads r line by line until EOF or a read error and re-emits each
// line. A read error ends forwarding quietly: it only happens when the pipe is
// closed under us after the worker has exited.
func (e *lineEmitter) forward(r io.Reader) {
	br := bufio.NewReaderSize(r, 4096)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > maxLogLine {
			chunk = chunk[:max(0, maxLogLine-len(line))]
		}
		line = append(line, chunk...)
		switch {
		case err == nil:
			e.emit(line)
			line = line[:0]
		case errors.Is(err, bufio.ErrBufferFull):
			// The line goes on; keep reading.
		default:
			if len(line) > 0 {
				e.emit(line)
			}
			return
		}
	}
}

// emit re-emits one line: hclog JSON at its own level with its arguments,
// anything else as a plain message at INFO (ERROR within a crash trace).
func (e *lineEmitter) emit(line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	if line[0] == '{' {
		if level, msg, args, ok := parseJSONLine(line); ok {
			e.crashing = false
			e.log.Log(level, msg, append(args, "pid", e.pid)...)
			return
		}
	}
	level := hclog.Info
	if bytes.HasPrefix(line, fatalPrefix) {
		// The worker's last words: why it is exiting with an error.
		level = hclog.Error
	}
	if !e.crashing {
		for _, p := range crashPrefixes {
			if bytes.HasPrefix(line, p) {
				e.crashing = true
				break
			}
		}
	}
	if e.crashing {
		level = hclog.Error
	}
	e.log.Log(level, string(line), "pid", e.pid)
}

// parseJSONLine decodes one line of hclog JSON output. Arguments come back
// sorted by key (JSON objects have no order), followed by "module" and
// "caller" when the worker's logger set them. The worker's timestamp is
// dropped: the supervisor's logger stamps the line again, microseconds later.
func parseJSONLine(line []byte) (level hclog.Level, msg string, args []any, ok bool) {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(line))
	// Keep numbers as written: float64 would turn large ids into 1.2e+18.
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil || dec.More() {
		return 0, "", nil, false
	}
	lv, hasLevel := m[keyLevel].(string)
	msg, hasMsg := m[keyMessage].(string)
	if !hasLevel && !hasMsg {
		// Some other JSON printed by the worker: not a log record.
		return 0, "", nil, false
	}
	level = hclog.LevelFromString(lv)
	if level == hclog.NoLevel || level == hclog.Off {
		level = hclog.Info
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		switch k {
		case keyLevel, keyMessage, keyModule, keyTimestamp, keyCaller:
		default:
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	args = make([]any, 0, 2*len(keys)+6)
	for _, k := range keys {
		args = append(args, k, m[k])
	}
	if mod, _ := m[keyModule].(string); mod != "" {
		args = append(args, "module", mod)
	}
	if c, _ := m[keyCaller].(string); c != "" {
		args = append(args, "caller", c)
	}
	return level, msg, args, true
}
