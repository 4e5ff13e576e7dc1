// Package ipalloc is the file-backed IP allocator behind the host-local IPAM plugin: range sets,
// the on-disk reservation store (byte-compatible with the reference host-local), its flock, and
// an index kept beside the store that makes lookups independent of the number of reservations.
package ipalloc

import (
	"fmt"
	"net/netip"
	"strings"
)

// FieldError is a validation error that names the config field at fault.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Msg) }

func fieldErr(field, format string, a ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// RangeSpec is one range as written in a config: strings, empty when not set.
type RangeSpec struct {
	Subnet, RangeStart, RangeEnd, Gateway string
}

// Range is a validated range: every field filled in, addresses unmapped (IPv4 as IPv4).
type Range struct {
	Subnet  netip.Prefix
	Start   netip.Addr // first address handed out, inclusive
	End     netip.Addr // last address handed out, inclusive
	Gateway netip.Addr // never handed out; may lie outside Subnet, as the reference allows
}

// RangeSet is a list of ranges of one address family; a container gets one address per set.
type RangeSet []Range

// ParseAddr parses an IP address as the reference does (net.ParseIP): no zone, IPv4-mapped
// IPv6 addresses become IPv4.
func ParseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("%q: an IP address with a zone is not allowed", s)
	}
	return a.Unmap(), nil
}

// ParseAddrOrCIDR parses "10.1.2.3" or "10.1.2.3/24" and returns the address (the prefix
// length is ignored, as the reference ignores it for requested IPs).
func ParseAddrOrCIDR(s string) (netip.Addr, error) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%q is not an IP address or CIDR", s)
		}
		s = p.Addr().String()
	}
	return ParseAddr(s)
}

// NewRange validates a range and fills in the reference's defaults: gateway = first address of
// the subnet, rangeStart = first address, rangeEnd = last address (IPv4: before broadcast).
// field is the config path of the range (e.g. "ipam.ranges[0][1]"), used in errors.
func NewRange(field string, spec RangeSpec) (Range, error) {
	var r Range
	if spec.Subnet == "" {
		return r, fieldErr(field+".subnet", "missing")
	}
	p, err := netip.ParsePrefix(spec.Subnet)
	if err != nil || p.Addr().Zone() != "" {
		return r, fieldErr(field+".subnet", "%q is not a CIDR", spec.Subnet)
	}
	if p.Addr().Is4In6() {
		return r, fieldErr(field+".subnet", "%q: IPv4-mapped IPv6 subnets are not supported", spec.Subnet)
	}
	if p.Bits() > p.Addr().BitLen()-2 {
		return r, fieldErr(field+".subnet", "network %s too small to allocate from", p)
	}
	if m := p.Masked(); m.Addr() != p.Addr() {
		return r, fieldErr(field+".subnet", "%s has host bits set; for a /%d the network address is %s", p, p.Bits(), m.Addr())
	}
	r.Subnet = p
	first := p.Addr().Next()
	r.Gateway = first
	if spec.Gateway != "" {
		if r.Gateway, err = ParseAddr(spec.Gateway); err != nil {
			return r, fieldErr(field+".gateway", "%v", err)
		}
	}
	r.Start = first
	if spec.RangeStart != "" {
		if r.Start, err = ParseAddr(spec.RangeStart); err != nil {
			return r, fieldErr(field+".rangeStart", "%v", err)
		}
		if !p.Contains(r.Start) {
			return r, fieldErr(field+".rangeStart", "%s is not in subnet %s", r.Start, p)
		}
	}
	r.End = lastAddr(p)
	if spec.RangeEnd != "" {
		if r.End, err = ParseAddr(spec.RangeEnd); err != nil {
			return r, fieldErr(field+".rangeEnd", "%v", err)
		}
		if !p.Contains(r.End) {
			return r, fieldErr(field+".rangeEnd", "%s is not in subnet %s", r.End, p)
		}
	}
	if r.Start.Compare(r.End) > 0 {
		// The reference v1.9.1 accepts a rangeStart on the IPv4 broadcast address (rangeEnd
		// defaulted just below it) and then hands out addresses outside the subnet; v1.10 and
		// we reject it.
		what := field + ".rangeEnd"
		if spec.RangeEnd == "" {
			what = field + ".rangeStart"
		}
		return r, fieldErr(what, "rangeStart %s is after rangeEnd %s in subnet %s", r.Start, r.End, p)
	}
	return r, nil
}

// lastAddr is the last address of p, or for IPv4 the one before the broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		switch {
		case bits >= 8:
			bits -= 8
		case bits > 0:
			b[i] |= byte(0xff >> bits)
			bits = 0
		default:
			b[i] = 0xff
		}
	}
	a, _ := netip.AddrFromSlice(b)
	if a.Is4() {
		a = a.Prev()
	}
	return a
}

// Contains reports whether a lies in [Start, End] (and in the subnet).
func (r *Range) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return a.BitLen() == r.Start.BitLen() && r.Subnet.Contains(a) &&
		a.Compare(r.Start) >= 0 && a.Compare(r.End) <= 0
}

// Allocatable reports whether a may be handed out: never the gateway, the network address or
// the IPv4 broadcast address (a rangeStart on the network address is accepted, as the
// reference accepts it, but that address is skipped).
func (r *Range) Allocatable(a netip.Addr) bool {
	if a == r.Gateway || a == r.Subnet.Addr() {
		return false
	}
	if a.Is4() && a == lastAddr(r.Subnet).Next() {
		return false
	}
	return true
}

func (r *Range) String() string { return r.Start.String() + "-" + r.End.String() }

func (r *Range) overlaps(o *Range) bool {
	if r.Start.BitLen() != o.Start.BitLen() {
		return false
	}
	return r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

// Is4 reports whether the set is IPv4.
func (s RangeSet) Is4() bool { return len(s) > 0 && s[0].Start.Is4() }

// RangeFor returns the range holding a, or nil.
func (s RangeSet) RangeFor(a netip.Addr) *Range {
	for i := range s {
		if s[i].Contains(a) {
			return &s[i]
		}
	}
	return nil
}

// Contains reports whether some range of the set holds a.
func (s RangeSet) Contains(a netip.Addr) bool { return s.RangeFor(a) != nil }

func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i := range s {
		parts[i] = s[i].String()
	}
	return strings.Join(parts, ",")
}

// Subnets lists the subnets of the set, for messages.
func (s RangeSet) Subnets() string {
	parts := make([]string, len(s))
	for i := range s {
		parts[i] = s[i].Subnet.String()
	}
	return strings.Join(parts, ",")
}

// NewRangeSet validates a list of ranges as one set: not empty, one family, no overlap.
// field is the config path of the set (e.g. "ipam.ranges[0]").
func NewRangeSet(field string, specs []RangeSpec) (RangeSet, error) {
	if len(specs) == 0 {
		return nil, fieldErr(field, "empty range set")
	}
	set := make(RangeSet, 0, len(specs))
	for j, spec := range specs {
		f := fmt.Sprintf("%s[%d]", field, j)
		r, err := NewRange(f, spec)
		if err != nil {
			return nil, err
		}
		if j > 0 && r.Start.BitLen() != set[0].Start.BitLen() {
			return nil, fieldErr(f+".subnet", "%s mixes address families with %s in one range set", r.Subnet, set[0].Subnet)
		}
		for k := range set {
			if set[k].overlaps(&r) {
				return nil, fieldErr(field, "ranges %s and %s overlap", set[k].String(), r.String())
			}
		}
		set = append(set, r)
	}
	return set, nil
}

// SetsOverlap reports the first pair of sets (by index) that share an address, or -1, -1.
func SetsOverlap(sets []RangeSet) (int, int) {
	for i := range sets {
		for j := i + 1; j < len(sets); j++ {
			for a := range sets[i] {
				for b := range sets[j] {
					if sets[i][a].overlaps(&sets[j][b]) {
						return i, j
					}
				}
			}
		}
	}
	return -1, -1
}
