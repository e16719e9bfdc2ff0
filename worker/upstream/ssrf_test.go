package upstream

import (
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestAddressPolicy(t *testing.T) {
	// want per policy: a = allowed, r = refused; columns false, loopback, true.
	tests := []struct {
		addr string
		want string
	}{
		{"8.8.8.8", "aaa"},
		{"1.1.1.1", "aaa"},
		{"2606:4700:4700::1111", "aaa"},
		{"100.63.255.255", "aaa"},  // just below CGNAT
		{"172.32.0.1", "aaa"},      // just above 172.16/12
		{"169.253.255.255", "aaa"}, // just below link-local
		{"127.0.0.1", "raa"},
		{"127.255.255.254", "raa"},
		{"::1", "raa"},
		{"::ffff:127.0.0.1", "raa"},
		{"10.0.0.1", "rra"},
		{"172.16.0.1", "rra"},
		{"172.31.255.255", "rra"},
		{"192.168.1.1", "rra"},
		{"100.64.0.1", "rra"},
		{"100.127.255.255", "rra"},
		{"169.254.169.254", "rra"}, // cloud metadata
		{"169.254.0.1", "rra"},
		{"fe80::1", "rra"},
		{"fe80::1%eth0", "rra"},
		{"fc00::1", "rra"},
		{"fd12:3456::1", "rra"},
		{"fec0::1", "rra"},
		{"::ffff:10.0.0.1", "rra"},
		{"::ffff:169.254.169.254", "rra"},
		{"::ffff:192.168.0.1", "rra"},
		{"64:ff9b::a9fe:a9fe", "rra"}, // NAT64 of 169.254.169.254
		{"64:ff9b::808:808", "aaa"},   // NAT64 of 8.8.8.8
		{"2002:a00:1::1", "rra"},      // 6to4 of 10.0.0.1
		{"2002:7f00:1::1", "raa"},     // 6to4 of 127.0.0.1
		{"::a00:1", "rra"},            // IPv4-compatible 10.0.0.1
		{"192.0.2.1", "rra"},
		{"198.18.0.1", "rra"},
		{"2001:db8::1", "rra"},
		// Never a destination, whatever the policy.
		{"0.0.0.0", "rrr"},
		{"0.1.2.3", "rrr"},
		{"::", "rrr"},
		{"::ffff:0.0.0.0", "rrr"},
		{"224.0.0.1", "rrr"},
		{"239.255.255.250", "rrr"},
		{"ff02::1", "rrr"},
		{"255.255.255.255", "rrr"},
		{"240.0.0.1", "rrr"},
	}
	policies := []string{AllowNone, AllowLoopback, AllowAll}
	for _, tt := range tests {
		ip := netip.MustParseAddr(tt.addr)
		for i, name := range policies {
			p, err := ParsePolicy(name)
			if err != nil {
				t.Fatal(err)
			}
			err = p.Check(ip)
			got := "a"
			if err != nil {
				got = "r"
				if !errors.Is(err, ErrForbiddenAddress) || !strings.Contains(err.Error(), ip.String()) {
					t.Errorf("Check(%s) error %q does not wrap ErrForbiddenAddress or name the address", tt.addr, err)
				}
			}
			if want := tt.want[i : i+1]; got != want {
				t.Errorf("policy %s: Check(%s) = %v, want allowed=%v", name, tt.addr, err, want == "a")
			}
		}
	}
}

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"", AllowLoopback, false},
		{"loopback", AllowLoopback, false},
		{" Loopback ", AllowLoopback, false},
		{"true", AllowAll, false},
		{"1", AllowAll, false},
		{"TRUE", AllowAll, false},
		{"false", AllowNone, false},
		{"0", AllowNone, false},
		{"yes", "", true},
		{"private", "", true},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePolicy(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err == nil && p.String() != tt.want {
			t.Errorf("ParsePolicy(%q) = %s, want %s", tt.in, p, tt.want)
		}
		if cerr := (Config{AllowPrivate: tt.in}).Validate(); (cerr != nil) != tt.wantErr {
			t.Errorf("Config{AllowPrivate: %q}.Validate() = %v, want error %v", tt.in, cerr, tt.wantErr)
		}
	}
}

func TestParseHostIP(t *testing.T) {
	tests := []struct {
		host string
		want string // "" = not an IP
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"127.1", "127.0.0.1"},
		{"127.0.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0X7F.0.0.1", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0177.1", "127.0.0.1"},
		{"0xa9.0xfe.0xa9.0xfe", "169.254.169.254"},
		{"0251.0376.0251.0376", "169.254.169.254"},
		{"2852039166", "169.254.169.254"},
		{"10.1", "10.0.0.1"},
		{"192.168.257", "192.168.1.1"},
		{"127.1.", "127.0.0.1"},
		{"[::1]", "::1"},
		{"::ffff:127.0.0.1", "::ffff:127.0.0.1"},
		{"0", "0.0.0.0"},
		{"api.openai.com", ""},
		{"localhost", ""},
		{"127.0.0.1.nip.io", ""},
		{"1.2.3.4.5", ""},
		{"256.1.1.1", ""},
		{"1.256.1.1", ""},
		{"1.2.65536", ""},
		{"4294967296", ""},
		{"08.1.1.1", ""}, // 8 is not an octal digit
		{"0x", ""},
		{"1..1", ""},
		{"", ""},
	}
	for _, tt := range tests {
		ip, ok := ParseHostIP(tt.host)
		got := ""
		if ok {
			got = ip.String()
		}
		if got != tt.want {
			t.Errorf("ParseHostIP(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
}

func TestValidateBaseURL(t *testing.T) {
	loopback, _ := ParsePolicy(AllowLoopback)
	none, _ := ParsePolicy(AllowNone)
	all, _ := ParsePolicy(AllowAll)
	tests := []struct {
		url    string
		policy AddressPolicy
		ok     bool
	}{
		{"https://api.openai.com/v1", none, true},
		{"http://127.0.0.1:9000/v1", loopback, true},
		{"http://localhost:9000/v1", none, true}, // names are judged at dial time
		{"http://[::1]:9000/v1", loopback, true},
		{"http://10.0.0.5:8080/v1", all, true},
		{"http://127.0.0.1:9000/v1", none, false},
		{"http://127.1/v1", none, false},
		{"http://0x7f000001/v1", none, false},
		{"http://2130706433/v1", none, false},
		{"http://0177.0.0.1/v1", none, false},
		{"http://169.254.169.254/latest/meta-data", loopback, false},
		{"http://0xa9fea9fe/", loopback, false},
		{"http://[::ffff:169.254.169.254]/", loopback, false},
		{"http://[fe80::1%25eth0]/", loopback, false},
		{"http://10.0.0.5/v1", loopback, false},
		{"http://0.0.0.0:8000/", all, false},
		{"ftp://example.com/", all, false},
		{"file:///etc/passwd", all, false},
		{"gopher://127.0.0.1:25/", all, false},
		{"//example.com/v1", all, false},
		{"example.com/v1", all, false},
		{"https://user:pass@example.com/v1", all, false},
		{"https://example.com/v1?api_key=x", all, false},
		{"https://example.com/v1#frag", all, false},
		{"https://example.com:0/v1", all, false},
		{"https://example.com:99999/v1", all, false},
		{"https://:443/v1", all, false},
		{"http://exa mple.com/", all, false},
	}
	for _, tt := range tests {
		err := ValidateBaseURL(tt.url, tt.policy)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateBaseURL(%q, %s) = %v, want ok %v", tt.url, tt.policy, err, tt.ok)
		}
	}
}

// TestDialGuard: the address actually dialled is checked, whatever spelling or
// name led to it, and a refused dial never reaches the upstream's socket.
func TestDialGuard(t *testing.T) {
	srv := newRawServer(t, okHandler("ok"))
	_, port, _ := net.SplitHostPort(srv.ln.Addr().String())
	hosts := []string{
		"127.0.0.1", "localhost", "127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[::ffff:127.0.0.1]",
	}
	for _, host := range hosts {
		t.Run(host, func(t *testing.T) {
			before := srv.accepts.Load()
			c := New(Config{AllowPrivate: AllowNone})
			_, _, err := doBuffered(t, c, "POST", "http://"+host+":"+port+"/v1/chat/completions", "{}")
			if err == nil {
				t.Fatalf("request to %s succeeded with AllowPrivate=false", host)
			}
			if !errors.Is(err, ErrDial) {
				t.Errorf("err = %v, want an ErrDial-class error (502)", err)
			}
			if !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("err = %v, want it to wrap ErrForbiddenAddress", err)
			}
			if got := srv.accepts.Load() - before; got != 0 {
				t.Errorf("the upstream accepted %d connections from a refused dial", got)
			}
		})
	}
	// The default policy (loopback) reaches the same server, so make demo and
	// mockllm on 127.0.0.1 work out of the box.
	for _, cfg := range []Config{{}, {AllowPrivate: AllowLoopback}, {AllowPrivate: AllowAll}} {
		c := New(cfg)
		status, body, err := doBuffered(t, c, "POST", "http://localhost:"+port+"/", "{}")
		if err != nil || status != 200 || body != "ok" {
			t.Errorf("AllowPrivate=%q: got %d %q %v, want 200 ok", cfg.AllowPrivate, status, body, err)
		}
	}
	// An invalid value fails closed.
	if _, _, err := doBuffered(t, New(Config{AllowPrivate: "maybe"}), "POST", srv.url()+"/", "{}"); !errors.Is(err, ErrForbiddenAddress) {
		t.Errorf("AllowPrivate=maybe: err = %v, want the dial refused", err)
	}
}

// The message a refused dial carries says what was refused and how to allow it.
func TestDialGuardMessage(t *testing.T) {
	c := New(Config{AllowPrivate: AllowNone})
	_, _, err := doBuffered(t, c, "POST", "http://127.0.0.1:9/", "{}")
	for _, want := range []string{"127.0.0.1", "loopback", "LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS=false"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %q", err, want)
		}
	}
}

// FuzzValidateBaseURL: the URL validator and the host parser never panic; a URL
// accepted under the strictest policy is http(s) with a host, and if that host
// is an IP address in any spelling, the address is public; a parsed host
// address prints back to itself; and the policies are nested (what "false"
// allows, "loopback" allows, and what "loopback" allows, "true" allows).
func FuzzValidateBaseURL(f *testing.F) {
	for _, s := range []string{
		"https://api.openai.com/v1", "http://127.0.0.1:9000/v1", "http://127.1/", "http://0x7f000001/",
		"http://2130706433/", "http://0177.0.0.1/", "http://[::ffff:169.254.169.254]/", "http://[fe80::1%25eth0]/",
		"http://169.254.169.254/latest/meta-data/", "http://10.1/", "https://user:pass@host/", "http://h/?q#f",
		"http://[::1]:65536/", "http://0/", "gopher://x/", "http://%31%32%37.0.0.1/", "http://127.0.0.1.:80/",
		"http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a00:1::1]/", "HTTP://EXAMPLE.COM/",
	} {
		f.Add(s, []byte{127, 0, 0, 1})
	}
	f.Add("http://x/", []byte{0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	none, _ := ParsePolicy(AllowNone)
	loopback, _ := ParsePolicy(AllowLoopback)
	all, _ := ParsePolicy(AllowAll)
	f.Fuzz(func(t *testing.T, raw string, addr []byte) {
		if err := ValidateBaseURL(raw, none); err == nil {
			u, perr := url.Parse(raw)
			if perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil {
				t.Fatalf("ValidateBaseURL accepted %q", raw)
			}
			if ip, ok := ParseHostIP(u.Hostname()); ok && none.Check(ip) != nil {
				t.Fatalf("ValidateBaseURL(%q, false) accepted the non-public address %s", raw, ip)
			}
			if ValidateBaseURL(raw, loopback) != nil || ValidateBaseURL(raw, all) != nil {
				t.Fatalf("%q is accepted under false but not under a wider policy", raw)
			}
		}
		if u, err := url.Parse(raw); err == nil {
			if ip, ok := ParseHostIP(u.Hostname()); ok {
				if again, ok := ParseHostIP(ip.String()); !ok || again != ip {
					t.Fatalf("ParseHostIP(%q) = %s, which parses back as %s, %v", u.Hostname(), ip, again, ok)
				}
			}
		}
		ip, ok := netip.AddrFromSlice(addr)
		if !ok {
			return
		}
		if none.Check(ip) == nil && loopback.Check(ip) != nil {
			t.Fatalf("%s: allowed under false, refused under loopback", ip)
		}
		if loopback.Check(ip) == nil && all.Check(ip) != nil {
			t.Fatalf("%s: allowed under loopback, refused under true", ip)
		}
		if ip.Is4() && none.Check(netip.AddrFrom16(ip.As16())) != nil != (none.Check(ip) != nil) {
			t.Fatalf("%s and its IPv4-mapped form are judged differently", ip)
		}
	})
}
