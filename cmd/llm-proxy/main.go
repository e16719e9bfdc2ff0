// Command llm-proxy is the OpenAI-compatible LLM gateway. With no arguments it is the
// supervisor, which re-executes this binary as LLM_PROXY_WORKERS worker processes; with a
// subcommand (keys, upstreams, migrate, status, version) it works on the database directly.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/llm-proxy/llm-proxy/supervisor"
)

// Set at build time: go build -ldflags "-X main.version=1.2.3 -X main.commit=abc -X main.buildDate=2026-01-02".
var (
	version   = "dev"
	commit    = "unknown"
	buildDate = "unknown"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // a runtime failure
	exitUsage = 2 // bad command line or configuration value
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain picks the role and maps its error to an exit status, printing the error as one line.
func realMain(args []string, stdout, stderr io.Writer) int {
	var err error
	switch {
	case supervisor.IsWorker():
		err = runWorker(stderr)
	case len(args) == 0:
		err = runSupervisor(stderr)
	default:
		err = runCommand(args, stdout, stderr)
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "llm-proxy: "+oneLine(err.Error()))
	var ce *ConfigError
	var ue *usageError
	if errors.As(err, &ce) || errors.As(err, &ue) {
		return exitUsage
	}
	return exitError
}

// usageError is a bad command line; it exits with status 2 like a bad configuration value.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...) + " (see llm-proxy --help)"}
}

// oneLine keeps an error on one line of stderr, whatever a wrapped library put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
