package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The binaries under test, built once per test binary run by buildBinaries.
var (
	buildOnce  sync.Once
	buildDir   string
	buildErr   error
	proxyBin   string // llm-proxy
	mockllmBin string // mockllm
)

// buildTimeout bounds the one `go build`; a cold cache compiles the pure-Go SQLite,
// which takes a while on two cores.
const buildTimeout = 5 * time.Minute

func TestMain(m *testing.M) {
	// Returning from TestMain makes the testing package exit with m.Run's
	// result, after the build directory is gone.
	m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
}

// binaries builds llm-proxy and mockllm (once) and returns their paths.
func binaries(t *testing.T) (proxy, mock string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "llm-proxy-e2e-bin-")
		if buildErr != nil {
			return
		}
		// `go test` puts its own toolchain first on PATH for the test binary, so
		// this builds with the same Go that compiled the tests.
		goTool, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("find the go tool: %w", err)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", buildDir+string(filepath.Separator),
			"github.com/llm-proxy/llm-proxy/cmd/llm-proxy",
			"github.com/llm-proxy/llm-proxy/cmd/mockllm")
		// Static binaries, as the Makefile ships them.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
			return
		}
		proxyBin = filepath.Join(buildDir, "llm-proxy")
		mockllmBin = filepath.Join(buildDir, "mockllm")
	})
	if buildErr != nil {
		t.Fatalf("build binaries: %v", buildErr)
	}
	return proxyBin, mockllmBin
}
