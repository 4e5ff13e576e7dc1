package link

import (
	"reflect"
	"testing"
)

func TestVlanRanges(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want [][2]int
	}{
		{nil, nil},
		{[]int{5}, [][2]int{{5, 5}}},
		{[]int{1, 2, 3, 7, 9, 10}, [][2]int{{1, 3}, {7, 7}, {9, 10}}},
	} {
		if got := vlanRanges(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("vlanRanges(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestRandomMACAndVethName(t *testing.T) {
	for i := 0; i < 100; i++ {
		m := RandomMAC(0)
		if len(m) != 6 || m[0]&1 != 0 || m[0]&2 == 0 {
			t.Fatalf("RandomMAC = %s: want locally administered unicast", m)
		}
		if h := RandomMAC(0xfe); h[0] != 0xfe {
			t.Fatalf("RandomMAC(0xfe) = %s", h)
		}
		if n := RandomVethName(); len(n) != 12 || n[:4] != "veth" {
			t.Fatalf("RandomVethName = %q", n)
		}
	}
}
