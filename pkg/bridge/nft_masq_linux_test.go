package bridge_test

import (
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// masqTable is the node's nftables masquerade table as nft lists it ("" when absent).
func masqTable(t *testing.T, e *env) string {
	t.Helper()
	out, err := e.node.Exec("nft", "list", "table", "inet", "cni_plugins_masquerade")
	if err != nil {
		return ""
	}
	return out
}

// nftMasqConf is masqConf with ipMasqBackend.
func nftMasqConf(e *env, backend string) []byte {
	return e.conf(map[string]any{"ipMasq": true, "ipMasqBackend": backend, "ipam": e.ipam("10.22.0.0/24", "fd00:22::/64"),
		"runtimeConfig": map[string]any{"ips": []string{"10.22.0.5/24", "fd00:22::5/64"}}})
}

// TestIPMasqTrafficPerBackend: a dual-stack pod reaches an upstream netns that has no route
// back to it, masqueraded behind the node's address, with each backend (ours and the
// reference's nftables one); DEL leaves nothing in either backend.
func TestIPMasqTrafficPerBackend(t *testing.T) {
	for _, tc := range []struct {
		backend string
		ref     bool
	}{{"iptables", false}, {"nftables", false}, {"nftables", true}} {
		name := tc.backend + "/ours"
		if tc.ref {
			name = tc.backend + "/reference"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			impl := e
			if tc.ref {
				impl = e.ref()
			}
			up := upstream(t, e)
			conf := e.conf(map[string]any{"ipMasq": true, "ipMasqBackend": tc.backend, "isDefaultGateway": true, "ipam": e.ipam("10.22.0.0/24", "fd00:22::/64")})
			p := e.node.NewPod(t)
			impl.add(p, "c1", conf)
			ping(t, p, "10.200.0.2")
			ping(t, p, "fd00:200::2")
			if n := arrivals(t, up, "iptables", "10.200.0.1"); n == "0" {
				t.Fatal("no IPv4 packet arrived upstream from the node's address")
			}
			if n := arrivals(t, up, "iptables", "10.22.0.0/24"); n != "0" {
				t.Fatalf("%s IPv4 packets arrived upstream from the pod's own address", n)
			}
			if n := arrivals(t, up, "ip6tables", "fd00:200::1"); n == "0" {
				t.Fatal("no IPv6 packet arrived upstream from the node's address")
			}
			nft := masqTable(t, e)
			if (tc.backend == "nftables") != strings.Contains(nft, `id: c1"`) {
				t.Fatalf("nftables masquerade rules present=%v with backend %s:\n%s", !(tc.backend == "nftables"), tc.backend, nft)
			}
			impl.call("DEL", p, "c1", "eth0", conf).MustSucceed(t)
			e.nothingLeft()
		})
	}
}

// TestNFTIPMasqRulesMatchReference: the reference bridge and ours make the same nftables
// masquerade table for the same container and addresses.
func TestNFTIPMasqRulesMatchReference(t *testing.T) {
	e := newEnv(t)
	conf := nftMasqConf(e, "nftables")
	p := e.node.NewPod(t)
	e.ref().add(p, "c1", conf)
	want := masqTable(t, e)
	if !strings.Contains(want, "10.22.0.5") || !strings.Contains(want, "fd00:22::5") {
		t.Fatalf("reference made no nftables masquerade rules:\n%s", want)
	}
	e.ref().call("DEL", p, "c1", "eth0", conf).MustSucceed(t)
	e.nothingLeft()
	e.node.MustExec(t, "nft", "delete", "table", "inet", "cni_plugins_masquerade")
	e.add(p, "c1", conf)
	if got := masqTable(t, e); got != want {
		t.Fatalf("nft list table differs:\nours:\n%s\nreference:\n%s", got, want)
	}
	if s := natSave(t, e.node.NS, "iptables-save") + natSave(t, e.node.NS, "ip6tables-save"); strings.Contains(s, "CNI-") {
		t.Fatalf("the nftables backend wrote iptables rules:\n%s", s)
	}
}

// TestNFTIPMasqDelByEitherCleansTheOther, and a DEL whose config names the other backend (the
// config changed while the pod ran) cleans up as well.
func TestNFTIPMasqDelByEitherCleansTheOther(t *testing.T) {
	e := newEnv(t)
	nft, ipt := nftMasqConf(e, "nftables"), nftMasqConf(e, "iptables")
	for _, c := range []struct {
		name        string
		add, del    *env
		addC, delC  []byte
		nftRulesMid bool
	}{
		{"ours-then-reference", e, e.ref(), nft, nft, true},
		{"reference-then-ours", e.ref(), e, nft, nft, true},
		{"ours-nftables-then-ours-iptables", e, e, nft, ipt, true},
		{"ours-iptables-then-ours-nftables", e, e, ipt, nft, false},
		{"reference-nftables-then-ours-iptables", e.ref(), e, nft, ipt, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := e.node.NewPod(t)
			c.add.add(p, "x1", c.addC)
			if got := strings.Contains(masqTable(t, e), "id: x1"); got != c.nftRulesMid {
				t.Fatalf("nftables rules after ADD: %v, want %v", got, c.nftRulesMid)
			}
			c.del.call("DEL", p, "x1", "eth0", c.delC).MustSucceed(t)
			e.nothingLeft()
			if s := masqTable(t, e); strings.Contains(s, "id: x1") {
				t.Fatalf("nftables rules left:\n%s", s)
			}
			if out := e.node.MustExec(t, "ip6tables-save", "-t", "nat"); strings.Contains(out, "CNI-") {
				t.Fatalf("IPv6 rules left:\n%s", out)
			}
		})
	}
}

// TestNFTIPMasqDelWithoutNetns: with the netns gone and no prevResult, the reference's DEL
// leaves its nftables rules (it tears down only when it finds the interface); ours removes
// them, found by the hash in their comment.
func TestNFTIPMasqDelWithoutNetns(t *testing.T) {
	e := newEnv(t)
	conf := nftMasqConf(e, "nftables")
	p := e.node.NewPod(t)
	e.ref().add(p, "gone1", conf)
	p.Delete(t)
	e.ref().call("DEL", p, "gone1", "eth0", conf).MustSucceed(t)
	if !strings.Contains(masqTable(t, e), "id: gone1") {
		t.Fatalf("expected the reference to leak its rules without a netns:\n%s", masqTable(t, e))
	}
	e.call("DEL", p, "gone1", "eth0", conf).MustSucceed(t)
	e.nothingLeft()
	if s := masqTable(t, e); strings.Contains(s, "id: gone1") {
		t.Fatalf("rules left:\n%s", s)
	}
}

func TestNFTIPMasqCheckAndGC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"cniVersion": "1.1.0", "ipMasq": true, "ipMasqBackend": "nftables"})
	p1, p2, p3 := e.node.NewPod(t), e.node.NewPod(t), e.node.NewPod(t)
	r1 := e.add(p1, "keep", conf)
	e.add(p2, "drop", conf)
	e.ref().add(p3, "drop-ref", conf)
	withP := withPrev(t, conf, r1)
	e.call("CHECK", p1, "keep", "eth0", withP).MustSucceed(t)

	e.call("GC", nil, "", "", withKey(t, conf, "cni.dev/valid-attachments", []map[string]string{{"containerID": "keep", "ifname": "eth0"}})).MustSucceed(t)
	out := masqTable(t, e)
	if !strings.Contains(out, "id: keep") || strings.Contains(out, "id: drop") {
		t.Fatalf("GC kept the wrong rules:\n%s", out)
	}
	e.call("CHECK", p1, "keep", "eth0", withP).MustSucceed(t)
	// Remove the pod's rule: CHECK names what is missing.
	e.node.MustExec(t, "nft", "flush", "chain", "inet", "cni_plugins_masquerade", "masq_checks")
	e.call("CHECK", p1, "keep", "eth0", withP).MustFail(t, 999).ErrContains(t, "ipMasq", "rule not found", "masq_checks", "masquerade")
	e.node.MustExec(t, "nft", "delete", "table", "inet", "cni_plugins_masquerade")
	e.call("CHECK", p1, "keep", "eth0", withP).MustFail(t, 999).ErrContains(t, "table inet cni_plugins_masquerade not found")
}

// TestNFTIPMasqNoProgram: with the nftables backend the bridge needs no program on PATH.
func TestNFTIPMasqNoProgram(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"ipMasq": true, "ipMasqBackend": "nftables"})
	p := e.node.NewPod(t)
	empty := []string{"PATH=" + t.TempDir()}
	for _, cmd := range []string{"ADD", "DEL", "DEL"} {
		c := testenv.Call{Bin: e.bin, Command: cmd, ContainerID: "c1", IfName: "eth0", Path: e.path, Config: conf, In: e.node.NS, Netns: p.Path, Env: empty}
		testenv.Run(t, c).MustSucceed(t)
		if cmd == "ADD" && !strings.Contains(masqTable(t, e), "id: c1") {
			t.Fatalf("no rule after ADD:\n%s", masqTable(t, e))
		}
	}
	e.nothingLeft()
}
