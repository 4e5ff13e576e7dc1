package netfilter

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func pm(cid string, port int) PortMap {
	return PortMap{
		Network: "pmnet", ContainerID: cid, SNAT: true, MarkMasqBit: 13,
		IPs: []netip.Prefix{netip.MustParsePrefix("10.66.0.5/24"), netip.MustParsePrefix("fd66::5/64")},
		Mappings: []PortMapping{
			{HostPort: port, ContainerPort: 80, Protocol: "tcp"},
			{HostPort: port + 1, ContainerPort: 53, Protocol: "udp", HostIP: netip.MustParseAddr("10.55.0.1")},
		},
	}
}

// TestPortMapBudget counts the programs each verb runs, over nftables netlink teardown
// (iptables-nft) and over iptables-restore only.
func TestPortMapBudget(t *testing.T) {
	type step struct {
		name string
		fn   func() error
		want int64 // programs for both families
	}
	steps := func(p PortMap) []step {
		return []step{
			{"add", func() error { return SetupPortMap(p) }, 2},
			{"add-again", func() error { return SetupPortMap(p) }, 4},
			{"check", func() error { return CheckPortMap(p) }, 2},
			{"del", func() error { return TeardownPortMap(p) }, 2},
			{"del-again", func() error { return TeardownPortMap(p) }, 4},
		}
	}
	for _, path := range []string{"netlink", "restore"} {
		t.Run(path, func(t *testing.T) {
			if path == "restore" {
				viaRestore(t)
			} else if !iptablesOnNFT(IPv4) || !iptablesOnNFT(IPv6) {
				t.Skip("iptables is not iptables-nft here")
			}
			node := testenv.NewNode(t)
			must(t, node, func() error { return SetupPortMap(pm("other", 7000)) })
			base := natBoth(t, node)
			for _, s := range steps(pm("budget", 8000)) {
				want := s.want
				if path == "netlink" && strings.HasPrefix(s.name, "del") {
					want = 0 // one netlink batch, or a netlink lookup finding nothing
				}
				before := natBoth(t, node)
				n := must(t, node, s.fn)
				if n != want {
					t.Errorf("%s ran %d programs, want %d", s.name, n, want)
				}
				if strings.HasSuffix(s.name, "-again") || s.name == "check" {
					if natBoth(t, node) != before {
						t.Errorf("%s changed the tables", s.name)
					}
				}
			}
			if got := natBoth(t, node); got != base {
				t.Fatalf("after DEL:\n%s\nwant:\n%s", diffText(base, got), base)
			}
		})
	}
}
