package routing

import (
	"math"
	"testing"
	"time"
)

// openCircuit fails d five times in a row, which opens its circuit.
func openCircuit(d *Deployment, now int64) {
	for range circuitFailures {
		d.State().Report(now, true)
	}
}

// Passive checks alone never eject more than half of a tier: with one of four
// circuits open the others take the traffic; with three of four open, circuits are
// ignored rather than leaving one deployment to carry everything (or none).
func TestPassiveChecksEjectAtMostHalf(t *testing.T) {
	book := NewBook(nil)
	var now int64 = int64(time.Hour)
	book.SetClock(func() int64 { return now })
	p := NewTable(newDeps("m", 1, 1, 1, 1), Weighted, WithBook(book)).Lookup("m")
	deps := p.Deployments()

	openCircuit(deps[0], now)
	for range 100 {
		if d := p.Next(0, now, 0); d == nil || d == deps[0] {
			t.Fatalf("one open circuit of four: got %v, want one of the other three", d)
		}
	}

	openCircuit(deps[1], now)
	openCircuit(deps[2], now)
	seen := map[*Deployment]int{}
	for range 400 {
		d := p.Next(0, now, 0)
		if d == nil {
			t.Fatal("three open circuits of four: no deployment chosen")
		}
		seen[d]++
	}
	if len(seen) != 4 {
		t.Errorf("three open circuits of four: traffic went to %d deployments, want all 4 (circuits ignored)", len(seen))
	}
}

// After the cool-down one request probes the deployment (half-open); its success
// closes the circuit, a failure re-opens it for longer.
func TestCircuitHalfOpenProbe(t *testing.T) {
	book := NewBook(nil)
	var now int64 = int64(time.Hour)
	book.SetClock(func() int64 { return now })
	p := NewTable(newDeps("m", 1, 1, 1, 1), RoundRobin, WithBook(book)).Lookup("m")
	d := p.Deployments()[0]
	openCircuit(d, now)
	if d.State().mayAdmit(now) {
		t.Fatal("open circuit admits")
	}
	now += int64(circuitBaseOpen)
	if !d.State().admit(now) {
		t.Fatal("half-open circuit refused its probe")
	}
	if d.State().admit(now) {
		t.Fatal("half-open circuit admitted a second concurrent probe")
	}
	d.State().Report(now, true) // the probe failed: open again, for twice as long
	now += int64(circuitBaseOpen)
	if d.State().mayAdmit(now) {
		t.Fatal("re-opened circuit admits after the first cool-down; want a doubled one")
	}
	now += int64(circuitBaseOpen)
	if !d.State().admit(now) {
		t.Fatal("no probe after the doubled cool-down")
	}
	d.State().Report(now, false)
	if d.State().CircuitOpen(now) || !d.State().mayAdmit(now) {
		t.Fatal("a successful probe did not close the circuit")
	}
}

func TestNegLogMatchesLn(t *testing.T) {
	prev := math.Inf(1)
	for i := 1; i < 100000; i++ {
		u := float64(i) / 100000
		got, want := negLog(u), -math.Log(u)
		if math.Abs(got-want) > 2e-4*math.Max(want, 1e-3)+1e-4 {
			t.Fatalf("negLog(%v) = %v, want %v", u, got, want)
		}
		if got >= prev {
			t.Fatalf("negLog not decreasing at %v: %v after %v", u, got, prev)
		}
		prev = got
	}
}
