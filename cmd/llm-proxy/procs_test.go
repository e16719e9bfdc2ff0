package main

import (
	"runtime"
	"testing"
)

func TestAtLeastTwoProcs(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	tests := []struct {
		name     string
		env      string
		start    int
		wantProc int
	}{
		{"one CPU, not chosen: raised", "", 1, 2},
		{"operator chose 1: kept", "1", 1, 1},
		{"already more: kept", "", 4, 4},
	}
	for _, tt := range tests {
		runtime.GOMAXPROCS(tt.start)
		atLeastTwoProcs(func(k string) string {
			if k == "GOMAXPROCS" {
				return tt.env
			}
			return ""
		})
		if got := runtime.GOMAXPROCS(0); got != tt.wantProc {
			t.Errorf("%s: GOMAXPROCS = %d, want %d", tt.name, got, tt.wantProc)
		}
	}
}
