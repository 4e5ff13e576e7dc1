package netfilter

import (
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func nftDual(cid string) Masq {
	m := dual(cid)
	m.Backend = BackendNFTables
	return m
}

// TestNFTMasqMatchesReference: the reference bridge v1.9.1 with ipMasqBackend nftables and our
// engine make the same nftables ruleset (listing and bytecode) for the same network,
// container and addresses; each implementation's DEL removes the other's rules; each CHECK
// accepts the other's.
func TestNFTMasqMatchesReference(t *testing.T) {
	for _, tc := range []struct{ name, ranges, net string }{
		{"ipv4", v4Ranges, ""}, {"ipv6", `[[{"subnet":"fd77::/64"}]]`, ""}, {"dual-stack", dualRanges, ""}, {"two-ipv4-and-ipv6", twoV4Ranges, ""},
		// The comment is cut to 128 bytes.
		{"long-name", v4Ranges, strings.Repeat("masqnet-", 14)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			net, cid := "masqnet", "ctr-masq-1"
			if tc.net != "" {
				net = tc.net
			}
			conf := nftBridgeConf(t, net, "nftables", tc.ranges)
			ref := testenv.NewNode(t)
			pod := ref.NewPod(t)
			add := refBridge(t, ref, pod, "ADD", cid, conf).MustSucceed(t)
			m := Masq{Backend: BackendNFTables, Network: net, ContainerID: cid, IfName: "eth0", IPs: resultIPs(t, add.Stdout)}

			ours := testenv.NewNode(t)
			if progs, _, err := nftOn(t, ours, func() error { return SetupMasq(m) }); err != nil || progs != 0 {
				t.Fatalf("SetupMasq: %v (%d programs run)", err, progs)
			}
			sameRuleset(t, ref, ours)
			noCNI(t, ours) // nothing in iptables

			// Our CHECK accepts the reference's rules; our DEL removes them.
			must(t, ref, func() error { return CheckMasq(m) })
			must(t, ref, func() error { return TeardownMasq(Masq{Network: net, ContainerID: cid, IfName: "eth0"}) })
			if s := ruleset(t, ref); strings.Contains(s, cid) {
				t.Fatalf("our DEL left the reference's rules:\n%s", s)
			}
			if err := ref.Do(func() error { return CheckMasq(m) }); err == nil || !strings.Contains(err.Error(), "rule not found") {
				t.Fatalf("CHECK after DEL: %v", err)
			}

			// The reference's DEL removes ours.
			must(t, ref, func() error { return SetupMasq(m) })
			sameRuleset(t, ref, ours)
			refBridge(t, ref, pod, "DEL", cid, conf).MustSucceed(t)
			if s := ruleset(t, ref); strings.Contains(s, cid) {
				t.Fatalf("the reference's DEL left our rules:\n%s", s)
			}
		})
	}
}

// TestNFTMasqBudget: with the nftables backend no program runs; ADD is one dump, one send of
// chain lookups and one batch,
// CHECK reads, DEL is one dump and one batch (plus a lookup of the iptables-nft chain per
// family), a repeated DEL writes nothing.
func TestNFTMasqBudget(t *testing.T) {
	node := testenv.NewNode(t)
	m := nftDual("ctr-budget")
	must(t, node, func() error { return SetupMasq(nftDual("ctr-other")) })
	for _, step := range []struct {
		name string
		fn   func() error
		nl   int64
	}{
		{"add", func() error { return SetupMasq(m) }, 3}, // a dump, the chain lookups, a batch
		{"add-again", func() error { return SetupMasq(m) }, 3},
		{"check", func() error { return CheckMasq(m) }, 2}, // the table, a dump
		// Per family the iptables-nft chain (absent: no iptables teardown); a dump, a batch.
		{"del", func() error { return TeardownMasq(m) }, 4},
		{"del-again", func() error { return TeardownMasq(m) }, 3},
	} {
		before := ruleset(t, node)
		progs, nl, err := nftOn(t, node, step.fn)
		if err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if progs != 0 || nl != step.nl {
			t.Errorf("%s: %d programs and %d nftables requests, want 0 and %d", step.name, progs, nl, step.nl)
		}
		if step.name == "add-again" && ruleset(t, node) != before {
			t.Errorf("a repeated ADD changed the ruleset:\n%s", diffText(before, ruleset(t, node)))
		}
	}
	s := ruleset(t, node)
	if strings.Contains(s, "ctr-budget") || !strings.Contains(s, "ctr-other") {
		t.Fatalf("after DEL, want only the other container's rules:\n%s", s)
	}
}
