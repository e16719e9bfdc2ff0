package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"
)

// pprofServer serves the runtime profiles of one worker on addr's host at addr's
// port + slot. Only loopback hosts are accepted: profiles expose memory contents.
func pprofServer(addr string, slot int) (*http.Server, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("LLM_PROXY_PPROF_ADDR=%q is invalid: %w", addr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil || port < 1 || port+slot > 65535 {
		return nil, fmt.Errorf("LLM_PROXY_PPROF_ADDR=%q is invalid: needs a port from 1 to 65535", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("LLM_PROXY_PPROF_ADDR=%q is invalid: profiles are served on loopback only", addr)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return &http.Server{
		Addr:              net.JoinHostPort(host, strconv.Itoa(port+slot)),
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
	}, nil
}
