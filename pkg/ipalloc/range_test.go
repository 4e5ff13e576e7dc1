package ipalloc

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

var mustAddr = netip.MustParseAddr

func TestNewRangeDefaults(t *testing.T) {
	for _, tc := range []struct {
		spec                 RangeSpec
		start, end, gw       string
		allocatable, blocked []string
	}{
		{RangeSpec{Subnet: "10.1.2.0/24"}, "10.1.2.1", "10.1.2.254", "10.1.2.1",
			[]string{"10.1.2.2", "10.1.2.254"}, []string{"10.1.2.0", "10.1.2.1", "10.1.2.255"}},
		{RangeSpec{Subnet: "10.1.2.0/30"}, "10.1.2.1", "10.1.2.2", "10.1.2.1", []string{"10.1.2.2"}, nil},
		{RangeSpec{Subnet: "fd00:1::/64"}, "fd00:1::1", "fd00:1::ffff:ffff:ffff:ffff", "fd00:1::1",
			[]string{"fd00:1::2", "fd00:1::ffff:ffff:ffff:ffff"}, []string{"fd00:1::", "fd00:1::1"}},
		{RangeSpec{Subnet: "fd00:1::/120", RangeStart: "fd00:1::10", RangeEnd: "fd00:1::20", Gateway: "fd00:1::fe"},
			"fd00:1::10", "fd00:1::20", "fd00:1::fe", []string{"fd00:1::1"}, []string{"fd00:1::fe"}},
		// The reference accepts a gateway outside the subnet, and a rangeStart on the network
		// address (which we then never hand out).
		{RangeSpec{Subnet: "10.1.2.0/24", RangeStart: "10.1.2.0", Gateway: "192.168.0.1"}, "10.1.2.0", "10.1.2.254", "192.168.0.1",
			[]string{"10.1.2.1"}, []string{"10.1.2.0", "192.168.0.1"}},
		{RangeSpec{Subnet: "10.1.2.0/24", RangeStart: "::ffff:10.1.2.5"}, "10.1.2.5", "10.1.2.254", "10.1.2.1", nil, nil},
	} {
		r, err := NewRange("r", tc.spec)
		if err != nil {
			t.Errorf("%+v: %v", tc.spec, err)
			continue
		}
		if r.Start != mustAddr(tc.start) || r.End != mustAddr(tc.end) || r.Gateway != mustAddr(tc.gw) {
			t.Errorf("%+v: got start %s end %s gw %s, want %s %s %s", tc.spec, r.Start, r.End, r.Gateway, tc.start, tc.end, tc.gw)
		}
		for _, a := range tc.allocatable {
			if !r.Allocatable(mustAddr(a)) {
				t.Errorf("%+v: %s should be allocatable", tc.spec, a)
			}
		}
		for _, a := range tc.blocked {
			if r.Allocatable(mustAddr(a)) {
				t.Errorf("%+v: %s must never be handed out", tc.spec, a)
			}
		}
	}
}

func TestNewRangeErrors(t *testing.T) {
	for _, tc := range []struct {
		spec  RangeSpec
		field string
		msg   string
	}{
		{RangeSpec{}, "r.subnet", "missing"},
		{RangeSpec{Subnet: "10.1.2.0"}, "r.subnet", "not a CIDR"},
		{RangeSpec{Subnet: "10.1.2.0/33"}, "r.subnet", "not a CIDR"},
		{RangeSpec{Subnet: "fe80::%eth0/64"}, "r.subnet", "not a CIDR"},
		{RangeSpec{Subnet: "::ffff:10.0.0.0/120"}, "r.subnet", "IPv4-mapped"},
		{RangeSpec{Subnet: "10.1.2.0/31"}, "r.subnet", "too small"},
		{RangeSpec{Subnet: "10.1.2.0/32"}, "r.subnet", "too small"},
		{RangeSpec{Subnet: "fd00::/127"}, "r.subnet", "too small"},
		{RangeSpec{Subnet: "10.1.2.5/24"}, "r.subnet", "network address is 10.1.2.0"},
		{RangeSpec{Subnet: "10.1.2.0/24", Gateway: "nope"}, "r.gateway", "not an IP"},
		{RangeSpec{Subnet: "10.1.2.0/24", RangeStart: "10.1.3.1"}, "r.rangeStart", "not in subnet"},
		{RangeSpec{Subnet: "10.1.2.0/24", RangeStart: "fd00::1"}, "r.rangeStart", "not in subnet"},
		{RangeSpec{Subnet: "10.1.2.0/24", RangeEnd: "10.1.3.1"}, "r.rangeEnd", "not in subnet"},
		{RangeSpec{Subnet: "10.1.2.0/24", RangeEnd: "1.2.3"}, "r.rangeEnd", "not an IP"},
		{RangeSpec{Subnet: "10.1.2.0/24", RangeStart: "10.1.2.50", RangeEnd: "10.1.2.40"}, "r.rangeEnd", "after rangeEnd"},
		{RangeSpec{Subnet: "10.1.2.0/24", RangeStart: "10.1.2.255"}, "r.rangeStart", "after rangeEnd"},
	} {
		_, err := NewRange("r", tc.spec)
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Errorf("%+v: error %v, want a FieldError", tc.spec, err)
			continue
		}
		if fe.Field != tc.field || !strings.Contains(fe.Msg, tc.msg) {
			t.Errorf("%+v: got %q (%s), want field %s and %q", tc.spec, fe.Msg, fe.Field, tc.field, tc.msg)
		}
	}
}

func TestRangeSets(t *testing.T) {
	for _, tc := range []struct {
		specs []RangeSpec
		field string // "" : valid
		msg   string
	}{
		{[]RangeSpec{{Subnet: "10.1.0.0/24"}, {Subnet: "10.2.0.0/24"}}, "", ""},
		{nil, "s", "empty"},
		{[]RangeSpec{{Subnet: "10.1.0.0/24"}, {Subnet: "fd00::/64"}}, "s[1].subnet", "mixes address families"},
		{[]RangeSpec{{Subnet: "10.1.0.0/22"}, {Subnet: "10.1.2.0/24"}}, "s", "overlap"},
		// Same subnet, disjoint ranges: fine.
		{[]RangeSpec{{Subnet: "10.1.0.0/24", RangeEnd: "10.1.0.99"}, {Subnet: "10.1.0.0/24", RangeStart: "10.1.0.100"}}, "", ""},
		{[]RangeSpec{{Subnet: "10.1.0.0/24", RangeEnd: "10.1.0.100"}, {Subnet: "10.1.0.0/24", RangeStart: "10.1.0.100"}}, "s", "overlap"},
		{[]RangeSpec{{Subnet: "10.1.0.0/24"}, {Subnet: "10.1.1.0/24", RangeEnd: "10.2.0.1"}}, "s[1].rangeEnd", "not in subnet"},
	} {
		set, err := NewRangeSet("s", tc.specs)
		if tc.field == "" {
			if err != nil || len(set) != len(tc.specs) {
				t.Errorf("%+v: %v", tc.specs, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(fe.Msg, tc.msg) {
			t.Errorf("%+v: got %v, want field %s and %q", tc.specs, err, tc.field, tc.msg)
		}
	}
	a, _ := NewRangeSet("a", []RangeSpec{{Subnet: "10.1.0.0/24"}})
	b, _ := NewRangeSet("b", []RangeSpec{{Subnet: "fd00::/64"}})
	c, _ := NewRangeSet("c", []RangeSpec{{Subnet: "10.0.0.0/8"}})
	if i, j := SetsOverlap([]RangeSet{a, b}); i != -1 || j != -1 {
		t.Errorf("v4 and v6 sets overlap?")
	}
	if i, j := SetsOverlap([]RangeSet{a, b, c}); i != 0 || j != 2 {
		t.Errorf("SetsOverlap = %d, %d, want 0, 2", i, j)
	}
	if !a.Contains(mustAddr("10.1.0.7")) || a.Contains(mustAddr("10.1.0.255")) || a.Contains(mustAddr("fd00::1")) {
		t.Errorf("Contains is wrong")
	}
}

func TestParseAddr(t *testing.T) {
	for in, want := range map[string]string{
		"10.1.2.3": "10.1.2.3", "10.1.2.3/24": "10.1.2.3", "::ffff:10.1.2.3": "10.1.2.3", "fd00::5/64": "fd00::5",
		"x": "", "10.1.2.3/99": "", "fe80::1%eth0": "", "": "", "010.1.2.3": "",
	} {
		got, err := ParseAddrOrCIDR(in)
		if want == "" {
			if err == nil {
				t.Errorf("%q: parsed as %s, want an error", in, got)
			}
			continue
		}
		if err != nil || got.String() != want {
			t.Errorf("%q: got %s, %v; want %s", in, got, err, want)
		}
	}
}

func TestBlocks(t *testing.T) {
	for _, tc := range []struct{ addr, base string }{
		{"10.1.2.3", "10.1.0.0"}, {"10.1.15.255", "10.1.0.0"}, {"10.1.16.0", "10.1.16.0"},
		{"fd00::1:2345", "fd00::1:2000"}, {"255.255.255.255", "255.255.240.0"},
	} {
		base, off := blockOf(mustAddr(tc.addr))
		if base != mustAddr(tc.base) || atOffset(base, off) != mustAddr(tc.addr) {
			t.Errorf("%s: base %s off %d, want base %s", tc.addr, base, off, tc.base)
		}
		if n, ok := parseBlockName(blockName(base)); !ok || n != base {
			t.Errorf("%s: block name %q does not round-trip", tc.addr, blockName(base))
		}
	}
	if n, ok := nextBlock(mustAddr("10.1.0.0")); !ok || n != mustAddr("10.1.16.0") {
		t.Errorf("nextBlock = %s %v", n, ok)
	}
	if _, ok := nextBlock(mustAddr("255.255.240.0")); ok {
		t.Errorf("nextBlock past the end of IPv4")
	}
	var bm bitmap
	for i := 0; i < 200; i++ {
		bm.set(i, true)
	}
	bm.set(130, false)
	for _, tc := range []struct{ from, to, want int }{
		{0, 4095, 130}, {131, 4095, 200}, {131, 199, -1}, {0, 129, -1}, {200, 200, 200}, {4095, 4095, 4095},
	} {
		if got := bm.nextFreeBit(tc.from, tc.to); got != tc.want {
			t.Errorf("nextFreeBit(%d, %d) = %d, want %d", tc.from, tc.to, got, tc.want)
		}
	}
	back, err := unmarshalBitmap(bm.marshal())
	if err != nil || *back != bm {
		t.Errorf("bitmap does not round-trip: %v", err)
	}
}

func TestSegments(t *testing.T) {
	set, _ := NewRangeSet("s", []RangeSpec{{Subnet: "10.0.0.0/29"}, {Subnet: "10.0.1.0/29"}, {Subnet: "10.0.2.0/29"}})
	str := func(segs []segment) string {
		var p []string
		for _, s := range segs {
			p = append(p, s.from.String()+"-"+s.to.String())
		}
		return strings.Join(p, " ")
	}
	for last, want := range map[string]string{
		"":         "10.0.0.1-10.0.0.6 10.0.1.1-10.0.1.6 10.0.2.1-10.0.2.6",
		"10.9.9.9": "10.0.0.1-10.0.0.6 10.0.1.1-10.0.1.6 10.0.2.1-10.0.2.6",
		"10.0.1.3": "10.0.1.4-10.0.1.6 10.0.2.1-10.0.2.6 10.0.0.1-10.0.0.6 10.0.1.1-10.0.1.3",
		"10.0.2.6": "10.0.0.1-10.0.0.6 10.0.1.1-10.0.1.6 10.0.2.1-10.0.2.6",
	} {
		var l netip.Addr
		if last != "" {
			l = mustAddr(last)
		}
		if got := str(segments(set, l)); got != want {
			t.Errorf("last %q: %s, want %s", last, got, want)
		}
	}
}
