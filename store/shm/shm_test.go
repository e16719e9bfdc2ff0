package shm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Child processes are this test binary re-executed with SHM_TEST_CHILD set, so the
// cross-process tests run real processes mapping the same file.
func TestMain(m *testing.M) {
	if mode := os.Getenv("SHM_TEST_CHILD"); mode != "" {
		if err := runChild(mode); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func runChild(mode string) error {
	r, err := Open(os.Getenv("SHM_TEST_PATH"), 1<<20)
	if err != nil {
		return err
	}
	defer r.Close()
	switch mode {
	case "add":
		// Goroutines × adds on one counter; every returned value is printed so the parent
		// can check that each value was handed out exactly once (strict round robin).
		s, err := r.Slot("round_robin:gpt-4o")
		if err != nil {
			return err
		}
		goroutines, _ := strconv.Atoi(os.Getenv("SHM_TEST_G"))
		adds, _ := strconv.Atoi(os.Getenv("SHM_TEST_N"))
		out := make([][]int64, goroutines)
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range adds {
					out[g] = append(out[g], s.Add(0, 1))
				}
			}()
		}
		wg.Wait()
		w := bufio.NewWriter(os.Stdout)
		for _, vs := range out {
			for _, v := range vs {
				fmt.Fprintln(w, v)
			}
		}
		return w.Flush()
	case "hold":
		// Take three in-flight requests on a deployment, say so, and wait to be killed.
		g, err := r.Gauge("in_flight:dep-a")
		if err != nil {
			return err
		}
		g.Add(3)
		fmt.Println("ready")
		time.Sleep(time.Minute)
		return errors.New("not killed")
	}
	return fmt.Errorf("unknown mode %q", mode)
}

func child(t *testing.T, path, mode string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, "SHM_TEST_CHILD="+mode, "SHM_TEST_PATH="+path)...)
	cmd.Stderr = os.Stderr
	return cmd
}

func openTest(t *testing.T, path string, size int) *Region {
	t.Helper()
	r, err := Open(path, size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

func TestProcessesAddExactly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "shm", "llm-proxy.shm")
	const procs, goroutines, adds = 4, 4, 2000
	r := openTest(t, path, 1<<20)
	var outs [procs]strings.Builder
	var cmds []*exec.Cmd
	for i := range procs {
		cmd := child(t, path, "add", "SHM_TEST_G="+strconv.Itoa(goroutines), "SHM_TEST_N="+strconv.Itoa(adds))
		cmd.Stdout = &outs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	const total = procs * goroutines * adds
	s, err := r.Slot("round_robin:gpt-4o")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Load(0); got != total {
		t.Fatalf("counter = %d, want %d", got, total)
	}
	// Every value 1..total handed out once: a round-robin index (v-1) % n rotates strictly
	// across all processes together, so each of 3 deployments gets the same share.
	seen := make([]bool, total+1)
	var share [3]int
	for i := range outs {
		for _, line := range strings.Fields(outs[i].String()) {
			v, err := strconv.ParseInt(line, 10, 64)
			if err != nil || v < 1 || v > total || seen[v] {
				t.Fatalf("value %q out of range or handed out twice", line)
			}
			seen[v] = true
			share[(v-1)%3]++
		}
	}
	for d, got := range share {
		if want := total / 3; got < want || got > want+1 {
			t.Errorf("deployment %d got %d picks, want %d or %d", d, got, want, want+1)
		}
	}
}

func TestReopenKeepsCounters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llm-proxy.shm")
	r, err := Open(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s, err := r.Slot("rpm:key:1")
	if err != nil {
		t.Fatal(err)
	}
	s.Add(0, 41)
	s.Add(5, -7)
	if !s.CompareAndSwap(0, 41, 42) {
		t.Fatal("CompareAndSwap(41, 42) failed")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := openTest(t, path, 4<<20) // a different size: the existing file keeps its own
	if got, want := r2.Capacity(), (1<<20-pageSize)/slotBytes; got != want {
		t.Errorf("Capacity after reopen = %d, want %d", got, want)
	}
	s2, err := r2.Slot("rpm:key:1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		i    int
		want int64
	}{{0, 42}, {5, -7}, {1, 0}}
	for _, tt := range tests {
		if got := s2.Load(tt.i); got != tt.want {
			t.Errorf("counter %d after reopen = %d, want %d", tt.i, got, tt.want)
		}
	}
	s2.Store(1, 9)
	if got := s2.Load(1); got != 9 {
		t.Errorf("Load after Store = %d, want 9", got)
	}
	c := s2.Counter(1)
	if got := c.Add(1); got != 10 || c.Load() != 10 || s2.Load(1) != 10 {
		t.Errorf("Counter(1).Add(1) = %d, Load = %d; want 10 on the same word", got, c.Load())
	}
	if got, want := r2.Names(), []string{"rpm:key:1"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("Names() = %q, want %q", got, want)
	}
}

func TestInvalidFileIsRecreated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llm-proxy.shm")
	if err := os.WriteFile(path, make([]byte, MinSize), 0o600); err != nil { // no magic
		t.Fatal(err)
	}
	r := openTest(t, path, 1<<20)
	if got, want := r.Capacity(), (1<<20-pageSize)/slotBytes; got != want {
		t.Errorf("Capacity = %d, want %d (file recreated at the requested size)", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %v, want 0600", got)
	}
}

func TestTableFull(t *testing.T) {
	r := openTest(t, filepath.Join(t.TempDir(), "llm-proxy.shm"), MinSize)
	n := r.Capacity()
	for i := range n {
		if _, err := r.Slot("s" + strconv.Itoa(i)); err != nil {
			t.Fatalf("slot %d of %d: %v", i, n, err)
		}
	}
	if _, err := r.Slot("one-too-many"); !errors.Is(err, ErrFull) {
		t.Errorf("slot beyond capacity: err = %v, want ErrFull", err)
	}
	if _, err := r.Slot("s7"); err != nil {
		t.Errorf("existing slot in a full table: %v", err)
	}
	if got := r.Used(); got != n {
		t.Errorf("Used() = %d, want %d", got, n)
	}
}

// A killed worker's in-flight requests must not count forever: Reap drops its column.
func TestGaugeReapsKilledProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llm-proxy.shm")
	r := openTest(t, path, 1<<20)
	depA, err := r.Gauge("in_flight:dep-a")
	if err != nil {
		t.Fatal(err)
	}
	depB, err := r.Gauge("in_flight:dep-b")
	if err != nil {
		t.Fatal(err)
	}
	depA.Add(1)
	depB.Add(2)

	cmd := child(t, path, "hold")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("child said %q, %v", line, err)
	}
	// least_connections reads these totals: the child's 3 make dep-a the busier one.
	if got, want := depA.Load(), int64(4); got != want {
		t.Fatalf("dep-a in flight with child = %d, want %d", got, want)
	}
	if a, b := depA.Load(), depB.Load(); !(b < a) {
		t.Errorf("least connections: dep-b (%d) should be below dep-a (%d)", b, a)
	}
	if got := r.Reap(); got != 0 {
		t.Errorf("Reap with every process alive freed %d rows, want 0", got)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if got := r.Reap(); got != 1 {
		t.Errorf("Reap after kill freed %d rows, want 1", got)
	}
	tests := []struct {
		name string
		g    *Gauge
		want int64
	}{{"dep-a", depA, 1}, {"dep-b", depB, 2}}
	for _, tt := range tests {
		if got := tt.g.Load(); got != tt.want {
			t.Errorf("%s in flight after reap = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestGaugeAddIfAtMostNeverExceeds(t *testing.T) {
	r := openTest(t, filepath.Join(t.TempDir(), "llm-proxy.shm"), 1<<20)
	g, err := r.Gauge("parallel:key:1")
	if err != nil {
		t.Fatal(err)
	}
	const limit = 10
	var (
		mu      sync.Mutex
		cur     int
		maxSeen int
		okCount int
		wg      sync.WaitGroup
	)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				if _, ok := g.AddIfAtMost(1, limit); !ok {
					continue
				}
				mu.Lock()
				cur++
				okCount++
				maxSeen = max(maxSeen, cur)
				mu.Unlock()
				mu.Lock()
				cur--
				mu.Unlock()
				g.Add(-1)
			}
		}()
	}
	wg.Wait()
	if maxSeen > limit {
		t.Errorf("%d held at once, limit %d", maxSeen, limit)
	}
	if okCount == 0 {
		t.Error("nothing admitted")
	}
	if got := g.Load(); got != 0 {
		t.Errorf("gauge after all releases = %d, want 0", got)
	}
}

func TestCloseReleasesGaugeShare(t *testing.T) {
	path := filepath.Join(t.TempDir(), "llm-proxy.shm")
	r1 := openTest(t, path, 1<<20)
	r2, err := Open(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	g1, _ := r1.Gauge("in_flight:x")
	g2, err := r2.Gauge("in_flight:x")
	if err != nil {
		t.Fatal(err)
	}
	g1.Add(1)
	g2.Add(5)
	if got := g1.Load(); got != 6 {
		t.Fatalf("total = %d, want 6", got)
	}
	if err := r2.Close(); err != nil {
		t.Fatal(err)
	}
	if got := g1.Load(); got != 1 {
		t.Errorf("total after the other region closed = %d, want 1", got)
	}
}

func BenchmarkSlotAdd(b *testing.B) {
	r, err := Open(filepath.Join(b.TempDir(), "llm-proxy.shm"), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	s, _ := r.Slot("round_robin:x")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Add(0, 1)
		}
	})
}

func BenchmarkGaugeAcquireRelease(b *testing.B) {
	r, err := Open(filepath.Join(b.TempDir(), "llm-proxy.shm"), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	g, _ := r.Gauge("in_flight:x")
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := g.AddIfAtMost(1, 100); ok {
			g.Add(-1)
		}
	}
}
