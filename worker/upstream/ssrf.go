package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
)

// Values of Config.AllowPrivate (LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS).
const (
	// AllowLoopback (the default) lets upstreams live on this machine (127.0.0.0/8,
	// ::1), which a local model server or mockllm needs, and refuses every other
	// non-public address.
	AllowLoopback = "loopback"
	// AllowAll dials private, loopback and link-local addresses too: for gateways
	// whose upstreams are on the LAN.
	AllowAll = "true"
	// AllowNone refuses loopback as well: only public addresses are dialled.
	AllowNone = "false"
)

// ErrForbiddenAddress is wrapped in the dial error when the address a connection
// would go to is refused by the address policy. The error also satisfies
// errors.Is(err, ErrDial): to the client it is a 502 like any upstream that
// cannot be reached.
var ErrForbiddenAddress = errors.New("address not allowed for upstreams")

// AddressPolicy decides which IP addresses upstream connections may go to. Its
// zero value allows public addresses only.
//
// The check runs on the address being connected, after DNS (net.Dialer.Control),
// not on the host name in the URL: a name that resolves to 10.0.0.1, a DNS answer
// that changes between a check and the dial (rebinding), and spellings such as
// 127.1, 0x7f.1 or 2130706433 all end up as the one address the kernel is asked
// to connect to, and that address is what is judged.
type AddressPolicy struct {
	allowLoopback bool
	allowPrivate  bool
}

// ParsePolicy reads an LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS value: "loopback" (or
// "", the default), or a boolean ("true"/"false", "1"/"0").
func ParsePolicy(s string) (AddressPolicy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", AllowLoopback:
		return AddressPolicy{allowLoopback: true}, nil
	}
	b, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return AddressPolicy{}, fmt.Errorf("upstream: LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS=%q is invalid: use true, false or loopback", s)
	}
	return AddressPolicy{allowLoopback: b, allowPrivate: b}, nil
}

// Fixed prefixes that netip has no predicate for.
var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")   // RFC 6598 carrier-grade NAT
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")       // RFC 1122 "this network"
	reserved4 = netip.MustParsePrefix("240.0.0.0/4")     // RFC 1112 reserved, incl. broadcast
	nat64     = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052: embeds an IPv4 address
	sixToFour = netip.MustParsePrefix("2002::/16")       // RFC 3056: embeds an IPv4 address
	v4compat  = netip.MustParsePrefix("::/96")           // deprecated IPv4-compatible IPv6
	teredo    = netip.MustParsePrefix("2001::/32")       // RFC 4380: embeds an obfuscated IPv4
	siteLocal = netip.MustParsePrefix("fec0::/10")       // deprecated site-local
	discard6  = netip.MustParsePrefix("100::/64")        // RFC 6666 discard-only
	docs6     = netip.MustParsePrefix("2001:db8::/32")   // RFC 3849 documentation
	bench4    = netip.MustParsePrefix("198.18.0.0/15")   // RFC 2544 benchmarking
	proto4    = netip.MustParsePrefix("192.0.0.0/24")    // RFC 6890 IETF protocol assignments
	docs4a    = netip.MustParsePrefix("192.0.2.0/24")    // RFC 5737 documentation
	docs4b    = netip.MustParsePrefix("198.51.100.0/24") // RFC 5737
	docs4c    = netip.MustParsePrefix("203.0.113.0/24")  // RFC 5737
)

// Check returns nil if an upstream connection may go to ip, or an error wrapping
// ErrForbiddenAddress that names the address and why.
func (p AddressPolicy) Check(ip netip.Addr) error {
	why := p.refuse(ip.WithZone(""))
	if why == "" {
		return nil
	}
	return fmt.Errorf("%w: %s is %s (LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS=%s)", ErrForbiddenAddress, ip, why, p)
}

// String is the LLM_PROXY_ALLOW_PRIVATE_UPSTREAMS value for p.
func (p AddressPolicy) String() string {
	switch {
	case p.allowPrivate:
		return AllowAll
	case p.allowLoopback:
		return AllowLoopback
	}
	return AllowNone
}

// refuse returns why ip is refused, or "".
func (p AddressPolicy) refuse(ip netip.Addr) string {
	if !ip.IsValid() {
		return "not an IP address"
	}
	if ip.Is4In6() {
		// ::ffff:10.0.0.1 reaches 10.0.0.1 on a dual-stack socket.
		ip = ip.Unmap()
	}
	// Addresses that are never a unicast destination, whatever the policy.
	switch {
	case ip.IsUnspecified() || (ip.Is4() && thisNet.Contains(ip)):
		return "unspecified (0.0.0.0/8, ::), which connects to this machine"
	case ip.IsMulticast():
		return "multicast"
	case ip.Is4() && reserved4.Contains(ip):
		return "reserved or broadcast (240.0.0.0/4)"
	}
	if ip.Is6() {
		// IPv6 forms that carry an IPv4 address are judged by that address, so a
		// translator on the path cannot be used to reach a refused one.
		switch {
		case nat64.Contains(ip), v4compat.Contains(ip) && ip != netip.IPv6Loopback():
			b := ip.As16()
			if why := p.refuse(netip.AddrFrom4([4]byte(b[12:16]))); why != "" {
				return "an IPv6 form of an address that " + why
			}
		case sixToFour.Contains(ip):
			b := ip.As16()
			if why := p.refuse(netip.AddrFrom4([4]byte(b[2:6]))); why != "" {
				return "an IPv6 form of an address that " + why
			}
		case teredo.Contains(ip):
			b := ip.As16()
			var v4 [4]byte
			for i := range v4 {
				v4[i] = b[12+i] ^ 0xff
			}
			if why := p.refuse(netip.AddrFrom4(v4)); why != "" {
				return "an IPv6 form of an address that " + why
			}
		}
	}
	if p.allowPrivate {
		return ""
	}
	switch {
	case ip.IsLoopback():
		if p.allowLoopback {
			return ""
		}
		return "loopback"
	case ip.IsLinkLocalUnicast():
		return "link-local (169.254.0.0/16, fe80::/10; cloud metadata services live here)"
	case ip.IsPrivate():
		return "private (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)"
	case ip.Is4() && cgnat.Contains(ip):
		return "shared address space (100.64.0.0/10, carrier-grade NAT)"
	case ip.Is6() && siteLocal.Contains(ip):
		return "site-local (fec0::/10)"
	case ip.Is4() && (bench4.Contains(ip) || proto4.Contains(ip) || docs4a.Contains(ip) || docs4b.Contains(ip) || docs4c.Contains(ip)),
		ip.Is6() && (discard6.Contains(ip) || docs6.Contains(ip)):
		return "a special-purpose range (RFC 6890) that is not publicly routed"
	}
	return ""
}

// control is the net.Dialer.Control hook: it runs after the name was resolved
// and before connect(2), with the numeric address about to be dialled.
func (p AddressPolicy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot read the address %q", ErrForbiddenAddress, address)
	}
	return p.Check(ap.Addr())
}

// ValidateBaseURL checks an upstream base URL when it is configured, so an admin
// sees a mistake at once instead of at the first request: the scheme must be http
// or https, there must be a host, no user:password@ part (credentials belong in
// the upstream's key, which is encrypted, not in a URL that is logged and shown),
// no query or fragment. A host that is an IP address in any spelling inet_aton
// accepts (127.1, 0x7f000001, 0177.0.0.1, ::ffff:127.0.0.1) is checked against
// p here; a host name is checked at every dial, since what it resolves to can
// change.
func ValidateBaseURL(raw string, p AddressPolicy) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("upstream: base URL %q does not parse", raw)
	}
	switch u.Scheme {
	case "http", "https":
	default:
		return fmt.Errorf("upstream: base URL %q must start with http:// or https://", raw)
	}
	if u.Opaque != "" || u.Host == "" {
		return fmt.Errorf("upstream: base URL %q has no host", raw)
	}
	if u.User != nil {
		return fmt.Errorf("upstream: base URL %q must not contain user:password@; store the credential as the upstream's key", raw)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(raw, "#") {
		return fmt.Errorf("upstream: base URL %q must not have a query or fragment", raw)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("upstream: base URL %q has no host", raw)
	}
	if port := u.Port(); port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("upstream: base URL %q has an invalid port", raw)
		}
	}
	if ip, ok := ParseHostIP(host); ok {
		if err := p.Check(ip); err != nil {
			return fmt.Errorf("upstream: base URL %q: %w", raw, err)
		}
	}
	return nil
}

// ParseHostIP reads host as an IP address the way resolvers that follow
// inet_aton do: besides dotted quads and IPv6 it accepts 1 to 4 parts, each
// decimal, octal (leading 0) or hex (0x), the last part filling the remaining
// bytes (127.1 is 127.0.0.1, 2130706433 and 0x7f000001 are too). ok is false for
// a host name.
func ParseHostIP(host string) (ip netip.Addr, ok bool) {
	// Brackets only as a pair: "::%]" is an IPv6 address whose zone is "]".
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a, true
	}
	// A trailing dot is the DNS root; "127.1." resolves like "127.1" in libc.
	host = strings.TrimSuffix(host, ".")
	parts := strings.Split(host, ".")
	if len(parts) == 0 || len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, s := range parts {
		v, ok := parseInetPart(s)
		if !ok {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	last := len(vals) - 1
	for i, v := range vals[:last] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (24 - 8*uint(i))
	}
	if vals[last] >= 1<<(8*uint(4-last)) {
		return netip.Addr{}, false
	}
	n |= vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// parseInetPart reads one inet_aton number: 0x1f, 017 or 15.
func parseInetPart(s string) (uint64, bool) {
	if s == "" {
		return 0, false
	}
	base := 10
	switch {
	case len(s) > 2 && (s[:2] == "0x" || s[:2] == "0X"):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	v, err := strconv.ParseUint(s, base, 32)
	if err != nil {
		return 0, false
	}
	return v, true
}
