package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// faults is the parsed form of one request's fault spec. Zero values mean
// "no fault"; the int fields that can legitimately be 0 use -1 for "unset".
type faults struct {
	status     int    // answer with this error status (0: none)
	retryAfter string // Retry-After value on injected errors ("": none)
	hang       bool
	slowFirst  time.Duration // wait before the response headers
	cut        int           // stream: close the connection after this many content chunks (-1: none)
	malformed  int           // stream: emit a broken event after this many content chunks (-1: none)
	chunks     int           // content chunk count override (0: server default)
	delay      time.Duration // inter-chunk delay override (valid when delaySet)
	delaySet   bool
	failFirst  int // the first N requests per key get 503 (0: none)
}

func noFaults() faults { return faults{cut: -1, malformed: -1} }

// parseFaults applies the comma-separated items of spec to f. Unknown items
// are errors rather than ignored, so a typo in a test shows up as a 400
// instead of a test that silently checks nothing.
func parseFaults(f *faults, spec string) error {
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		key, val, hasVal := strings.Cut(item, "=")
		key = strings.TrimSpace(key)
		val = strings.TrimSpace(val)
		var err error
		switch key {
		case "hang":
			if hasVal {
				return fmt.Errorf("fault %q takes no value", key)
			}
			f.hang = true
			continue
		case "status":
			f.status, err = atoiRange(val, 400, 599)
		case "retry_after":
			if _, err = atoiRange(val, 0, 1<<31-1); err == nil {
				f.retryAfter = val
			}
		case "slow_first", "latency":
			// Both delay the first byte: for a plain response that is the
			// whole answer, for a stream it is the headers.
			var d time.Duration
			if d, err = parseDur(val); err == nil && d > f.slowFirst {
				f.slowFirst = d
			}
		case "cut":
			f.cut, err = atoiRange(val, 0, 1<<20)
		case "malformed":
			f.malformed, err = atoiRange(val, 0, 1<<20)
		case "chunks":
			f.chunks, err = atoiRange(val, 1, 1<<20)
		case "delay":
			f.delay, err = parseDur(val)
			f.delaySet = err == nil
		case "fail_first":
			f.failFirst, err = atoiRange(val, 0, 1<<30)
		default:
			return fmt.Errorf("unknown fault %q (known: status, retry_after, hang, slow_first, latency, cut, malformed, chunks, delay, fail_first)", key)
		}
		if err != nil {
			return fmt.Errorf("fault %q: %w", key, err)
		}
	}
	return nil
}

func atoiRange(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("want an integer, got %q", s)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d out of range [%d, %d]", n, lo, hi)
	}
	return n, nil
}

// parseDur accepts Go durations ("250ms", "2s") and bare numbers as seconds
// ("2", "0.5"), matching how Retry-After and most people write delays.
func parseDur(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 {
			return 0, fmt.Errorf("negative duration %q", s)
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration like 250ms or 2s, got %q", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return d, nil
}

// splitModel separates "gpt-4o@status=503" into the model and its fault spec.
func splitModel(model string) (name, spec string) {
	name, spec, _ = strings.Cut(model, "@")
	return name, spec
}
