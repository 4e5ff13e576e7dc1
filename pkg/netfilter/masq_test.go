package netfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func bridgeConf(t testing.TB, name string, masq bool, ranges string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"bridge","bridge":"cnib0","isGateway":%v,
		"ipMasq":%v,"ipam":{"type":"host-local","dataDir":%q,"ranges":%s}}`, name, ranges != twoV4Ranges, masq, t.TempDir(), ranges)
}

const (
	v4Ranges   = `[[{"subnet":"10.77.0.0/24"}]]`
	dualRanges = `[[{"subnet":"10.77.0.0/24"}],[{"subnet":"fd77::/64"}]]`
	// Two IPv4 ranges: two addresses of one family, so two ACCEPT rules and two jumps.
	twoV4Ranges = `[[{"subnet":"10.77.0.0/24"}],[{"subnet":"10.78.0.0/24"}],[{"subnet":"fd77::/64"}]]`
)

// TestMasqMatchesReference compares the rules of the reference bridge v1.9.1 (ipMasq) with
// ours for the same network, container and addresses, and has each implementation clean what
// the other made.
func TestMasqMatchesReference(t *testing.T) {
	for _, tc := range []struct{ name, ranges string }{
		{"ipv4", v4Ranges}, {"dual-stack", dualRanges}, {"two-ipv4-and-ipv6", twoV4Ranges},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const net, cid = "masqnet", "ctr-masq-1"
			refNode := testenv.NewNode(t)
			pod := refNode.NewPod(t)
			add := refBridge(t, refNode, pod, "ADD", cid, bridgeConf(t, net, true, tc.ranges)).MustSucceed(t)
			ips := resultIPs(t, add.Stdout)
			m := Masq{Network: net, ContainerID: cid, IfName: "eth0", IPs: ips}

			ours := testenv.NewNode(t)
			must(t, ours, func() error { return SetupMasq(m) })
			sameTables(t, refNode, ours)

			// Ours cleans the reference's, with the IPs known and without.
			must(t, refNode, func() error { return TeardownMasq(m) })
			noCNI(t, refNode)

			// The reference's DEL cleans ours (it finds the IPs on the pod's interface).
			must(t, refNode, func() error { return SetupMasq(m) })
			sameTables(t, refNode, ours)
			del := refBridge(t, refNode, pod, "DEL", cid, bridgeConf(t, net, true, tc.ranges))
			if tc.ranges == twoV4Ranges {
				// The reference tears down per IP and deletes the chain while the second IP's
				// jump still points at it: its DEL fails on its own rules as on ours. Ours
				// cleans up after it.
				del.MustFail(t, 999).ErrContains(t, "CHAIN_DEL failed")
				must(t, refNode, func() error { return TeardownMasq(Masq{Network: net, ContainerID: cid}) })
			} else {
				del.MustSucceed(t)
			}
			noCNI(t, refNode)
		})
	}
}

// TestMasqTeardownFindsRulesByComment: with the pod's IPs unknown (netns gone, no prevResult)
// our teardown still removes the reference's rules, which the reference's own DEL leaks; over
// nftables netlink (no program at all) and over iptables-restore.
func TestMasqTeardownFindsRulesByComment(t *testing.T) {
	for _, path := range []string{"netlink", "restore"} {
		t.Run(path, func(t *testing.T) {
			const net, cid = "masqnet", "ctr-gone"
			node := testenv.NewNode(t)
			pod := node.NewPod(t)
			refBridge(t, node, pod, "ADD", cid, bridgeConf(t, net, true, dualRanges)).MustSucceed(t)
			pod.Delete(t)
			refBridge(t, node, pod, "DEL", cid, bridgeConf(t, net, true, dualRanges)).MustSucceed(t)
			if s := natBoth(t, node); !strings.Contains(s, MasqChain(net, cid)) {
				t.Fatalf("expected the reference to leak its rules without a netns:\n%s", s)
			}
			// Programs run: teardown without IPs, again, again with IPs (per family: a read and
			// a write; a read; a failed exact deletion and an absence probe).
			want := []int64{4, 2, 4}
			if path == "netlink" {
				if !iptablesOnNFT(IPv4) || !iptablesOnNFT(IPv6) {
					t.Skip("iptables is not iptables-nft here")
				}
				want = []int64{0, 0, 0}
			} else {
				viaRestore(t)
			}
			n := must(t, node, func() error { return TeardownMasq(Masq{Network: net, ContainerID: cid}) })
			noCNI(t, node)
			n2 := must(t, node, func() error { return TeardownMasq(Masq{Network: net, ContainerID: cid}) })
			n3 := must(t, node, func() error { return TeardownMasq(dual(cid)) })
			if got := []int64{n, n2, n3}; got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
				t.Errorf("programs run by teardown, again, again with IPs: %v, want %v", got, want)
			}
		})
	}
}

func dual(cid string) Masq {
	return Masq{Network: "masqnet", ContainerID: cid, IfName: "eth0", IPs: []netip.Prefix{
		netip.MustParsePrefix("10.77.0.5/24"), netip.MustParsePrefix("fd77::5/64")}}
}

// TestMasqBudget: per family, ADD of a new container is one restore; a repeated ADD reads and
// writes nothing (a failed create and a passing -C check); DEL is one restore, or one netlink
// batch with iptables-nft; a repeated DEL reads and writes nothing.
func TestMasqBudget(t *testing.T) {
	for _, path := range []string{"netlink", "restore"} {
		t.Run(path, func(t *testing.T) {
			if path == "restore" {
				viaRestore(t)
			} else if !iptablesOnNFT(IPv4) || !iptablesOnNFT(IPv6) {
				t.Skip("iptables is not iptables-nft here")
			}
			node := testenv.NewNode(t)
			m := dual("ctr-budget")
			must(t, node, func() error { return SetupMasq(dual("ctr-other")) })
			for _, step := range []struct {
				name string
				fn   func() error
				want int64
			}{
				{"add", func() error { return SetupMasq(m) }, 2},
				{"add-again", func() error { return SetupMasq(m) }, 4},
				{"check", func() error { return CheckMasq(m) }, 2},
				{"del", func() error { return TeardownMasq(m) }, 2},
				{"del-again", func() error { return TeardownMasq(m) }, 4},
			} {
				want := step.want
				if path == "netlink" && strings.HasPrefix(step.name, "del") {
					want = 0
				}
				before := natBoth(t, node)
				n := must(t, node, step.fn)
				if n != want {
					t.Errorf("%s ran %d iptables programs, want %d", step.name, n, want)
				}
				if strings.HasSuffix(step.name, "-again") && natBoth(t, node) != before {
					t.Errorf("%s changed the table", step.name)
				}
			}
			if s := natBoth(t, node); strings.Contains(s, MasqChain("masqnet", "ctr-budget")) || !strings.Contains(s, MasqChain("masqnet", "ctr-other")) {
				t.Fatalf("after DEL, want only the other container's rules:\n%s", s)
			}
		})
	}
}

// TestMasqRepairsPartialState: an ADD over a chain left half-filled adds what is missing.
func TestMasqRepairsPartialState(t *testing.T) {
	node := testenv.NewNode(t)
	m := dual("ctr-partial")
	must(t, node, func() error { return SetupMasq(m) })
	want := natBoth(t, node)
	chain := MasqChain(m.Network, m.ContainerID)
	node.MustExec(t, "iptables", "-t", "nat", "-D", chain, "2")
	node.MustExec(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "1")
	node.MustExec(t, "ip6tables", "-t", "nat", "-F", chain)
	_, err := on(t, node, func() error { return CheckMasq(m) })
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("CHECK of a broken chain: %v", err)
	}
	must(t, node, func() error { return SetupMasq(m) })
	if got := natBoth(t, node); got != want {
		t.Fatalf("not repaired:\n%s", diffText(want, got))
	}
	must(t, node, func() error { return CheckMasq(m) })
}

func TestMasqCheckNamesMissingRule(t *testing.T) {
	node := testenv.NewNode(t)
	m := dual("ctr-check")
	_, err := on(t, node, func() error { return CheckMasq(m) })
	if err == nil || !strings.Contains(err.Error(), MasqChain(m.Network, m.ContainerID)) {
		t.Fatalf("CHECK before ADD: %v", err)
	}
	must(t, node, func() error { return SetupMasq(m) })
	must(t, node, func() error { return CheckMasq(m) })
	must(t, node, func() error { return CheckMasq(Masq{Network: m.Network, ContainerID: m.ContainerID}) })
	node.MustExec(t, "ip6tables", "-t", "nat", "-D", "POSTROUTING", "1")
	_, err = on(t, node, func() error { return CheckMasq(m) })
	if err == nil || !strings.Contains(err.Error(), "IPv6") || !strings.Contains(err.Error(), "-s fd77::5/128") {
		t.Fatalf("CHECK with the IPv6 jump gone: %v", err)
	}
}

func TestMasqGC(t *testing.T) {
	node := testenv.NewNode(t)
	for _, id := range []string{"keep-1", "gone-1", "gone-2"} {
		must(t, node, func() error { return SetupMasq(dual(id)) })
	}
	other := dual("gone-1")
	other.Network = "othernet"
	must(t, node, func() error { return SetupMasq(other) })
	// A chain whose jump is gone (an older plugin killed half way) is found by its comment.
	node.MustExec(t, "iptables", "-t", "nat", "-D", "POSTROUTING", "-s", "10.77.0.5/32", "-m", "comment",
		"--comment", MasqComment("masqnet", "gone-2"), "-j", MasqChain("masqnet", "gone-2"))
	must(t, node, func() error {
		return GCMasq("", "masqnet", []Attachment{{ContainerID: "keep-1", IfName: "eth0"}})
	})
	s := natBoth(t, node)
	for id, want := range map[string]bool{"keep-1": true, "gone-1": false, "gone-2": false} {
		if strings.Contains(s, MasqChain("masqnet", id)) != want {
			t.Errorf("after GC, chain of %s present=%v, want %v", id, !want, want)
		}
	}
	if !strings.Contains(s, MasqChain("othernet", "gone-1")) {
		t.Errorf("GC removed another network's rules")
	}
	if t.Failed() {
		t.Log(s)
	}
}

func TestMasqBackends(t *testing.T) {
	for _, b := range []string{"pf"} {
		var te *types.Error
		err := SetupMasq(Masq{Backend: b, Network: "n", ContainerID: "c", IPs: dual("c").IPs})
		if !errors.As(err, &te) || te.Code != types.ErrUnsupportedField || !strings.Contains(te.Msg, "ipMasqBackend") || !strings.Contains(te.Msg, b) {
			t.Errorf("backend %q: %v, want code 2 naming ipMasqBackend and the value", b, err)
		}
	}
}

// TestMasqRollsBackOnFailure: when the IPv6 write fails, the IPv4 rules made by the same call
// are removed again.
func TestMasqRollsBackOnFailure(t *testing.T) {
	node := testenv.NewNode(t)
	bin := t.TempDir()
	for _, p := range []string{"iptables-save", "iptables-restore"} {
		real, err := execLookPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"ip6tables-save", "ip6tables-restore"} {
		if err := os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\necho broken >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	_, err := on(t, node, func() error { return SetupMasq(dual("ctr-rollback")) })
	if err == nil || !strings.Contains(err.Error(), "IPv6") {
		t.Fatalf("want an IPv6 error, got %v", err)
	}
	if s := natSave(t, node, IPv4); strings.Contains(s, "CNI") {
		t.Fatalf("IPv4 rules left after a failed ADD:\n%s", s)
	}
}
