package netfilter

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables/expr"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func nftPM(cid string, port int) PortMap {
	p := pm(cid, port)
	p.Backend = BackendNFTables
	return p
}

// TestNFTConditions: the nft syntax subset of conditionsV4/V6, as rule text, and what is
// refused.
func TestNFTConditions(t *testing.T) {
	for _, tc := range []struct {
		f     Family
		conds []string
		text  string // the rule's text before "fib daddr type local"
		err   string
	}{
		{IPv4, nil, "", ""},
		{IPv4, []string{"ip", "saddr", "10.0.0.0/8"}, "ip saddr 10.0.0.0/8", ""},
		{IPv4, []string{"ip saddr == 10.1.2.3 ip daddr != 10.0.0.0/12"}, "ip saddr 10.1.2.3 ip daddr != 10.0.0.0/12", ""},
		{IPv4, []string{"ip daddr 10.1.2.3/20"}, "ip daddr 10.1.0.0/20", ""},
		{IPv4, []string{"iifname", `"eth0"`, "oifname != lo*"}, `iifname "eth0" oifname != "lo*"`, ""},
		{IPv4, []string{"meta iifname veth*"}, `iifname "veth*"`, ""},
		{IPv6, []string{"ip6 saddr != fd00::/8"}, "ip6 saddr != fd00::/8", ""},
		{IPv6, []string{"ip saddr 10.0.0.0/8"}, "", "cannot apply to the IPv6 table"},
		{IPv4, []string{"ip saddr fd00::1"}, "", "not an IPv4 address"},
		{IPv4, []string{"ip saddr 10.0.0.300"}, "", "not an address"},
		{IPv4, []string{"ip saddr"}, "", "needs a value"},
		{IPv4, []string{"meta mark 0x1"}, "", `"meta mark 0x1" is not supported`},
		{IPv4, []string{"ip saddr { 10.0.0.1, 10.0.0.2 }"}, "", "not an address"},
		{IPv4, []string{`iifname "eth0`}, "", "unterminated quote"},
		{IPv4, []string{"iifname averyveryverylongname"}, "", "not an interface name"},
		{IPv4, []string{"iifname a*b"}, "", "not an interface name"},
		{IPv4, []string{`iifname "*"`}, "", "not an interface name"},
	} {
		t.Run(strings.Join(tc.conds, " "), func(t *testing.T) {
			b := newRule(nftFam(tc.f))
			err := b.conditions(tc.f, tc.conds)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(b.text, " "); got != tc.text {
				t.Fatalf("text %q, want %q", got, tc.text)
			}
		})
	}
}

// TestNFTConditionsMatchNft: our encoding of conditions is the nft program's, checked by
// having nft write the same rule in a table of its own and comparing the bytecode.
func TestNFTConditionsMatchNft(t *testing.T) {
	node := testenv.NewNode(t)
	conds := map[Family]string{
		IPv4: `ip saddr 10.1.2.3 ip daddr != 10.16.0.0/12 iifname "eth0" oifname != "lo*" ip saddr 0.0.0.0/0`,
		IPv6: `ip6 saddr fd00::/8 ip6 daddr != fd00:1:2::/60 iifname "veth*"`,
	}
	for _, f := range []Family{IPv4, IPv6} {
		c := conds[f]
		fam := map[Family]string{IPv4: "ip", IPv6: "ip6"}[f]
		node.MustExec(t, "nft", "add table "+fam+" cni_hostport; add chain "+fam+" cni_hostport hostports_all; add chain "+fam+" cni_hostport prerouting; add rule "+fam+" cni_hostport prerouting "+c+" fib daddr type local jump hostports_all")
	}
	want := bytecode(t, node)
	node.MustExec(t, "nft", "flush", "ruleset")
	must(t, node, func() error {
		c, err := nftOpen()
		if err != nil {
			return err
		}
		defer c.close()
		b := &nftBatch{}
		for _, f := range []Family{IPv4, IPv6} {
			b.addTable(nftFam(f), pmTable, "")
			b.addChain(nftFam(f), pmTable, nftChainSpec{name: pmHostPortsAll})
			b.addChain(nftFam(f), pmTable, nftChainSpec{name: pmPrerouting})
			r := newRule(nftFam(f))
			if err := r.conditions(f, []string{conds[f]}); err != nil {
				return err
			}
			b.addRule(nftFam(f), pmTable, r.fibLocal().verdict(expr.VerdictJump, pmHostPortsAll).rule(pmPrerouting, ""))
		}
		return c.commit(b)
	})
	if got := bytecode(t, node); got != want {
		t.Fatalf("bytecode differs:\n%s", diffText(want, got))
	}
}

// TestNFTPortMapBudget: no program, and per verb a dump per family and one batch.
func TestNFTPortMapBudget(t *testing.T) {
	node := testenv.NewNode(t)
	must(t, node, func() error { return SetupPortMap(nftPM("other", 7000)) })
	p := nftPM("budget", 8000)
	for _, s := range []struct {
		name string
		fn   func() error
		nl   int64
	}{
		// Per family a dump and one send of chain lookups; one batch.
		{"add", func() error { return SetupPortMap(p) }, 5},
		{"add-again", func() error { return SetupPortMap(p) }, 5},
		// Per family: the table, a dump, the empty chain hostip_hostports.
		{"check", func() error { return CheckPortMap(p) }, 6},
		// Per family the iptables-nft chain (absent: no iptables teardown), a dump; one batch.
		{"del", func() error { return TeardownPortMap(p) }, 5},
		{"del-again", func() error { return TeardownPortMap(p) }, 4},
		// Per family: the iptables-nft chain names (no CNI-HOSTPORT-DNAT: no iptables-save), a dump.
		{"gc", func() error { return GCPortMap("", "pmnet", []Attachment{{ContainerID: "other"}}) }, 4},
	} {
		before := ruleset(t, node)
		progs, nl, err := nftOn(t, node, s.fn)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if progs != 0 || nl != s.nl {
			t.Errorf("%s: %d programs and %d nftables requests, want 0 and %d", s.name, progs, nl, s.nl)
		}
		if s.name != "add" && s.name != "del" && ruleset(t, node) != before {
			t.Errorf("%s changed the ruleset:\n%s", s.name, diffText(before, ruleset(t, node)))
		}
	}
	if s := ruleset(t, node); strings.Contains(s, `"budget"`) || !strings.Contains(s, `"other"`) {
		t.Fatalf("want only the other container's rules:\n%s", s)
	}
}

// TestNFTBatchIsAtomic: when one message of a verb's batch fails, nothing of it is applied:
// neither the other family's table nor any rule of the container.
func TestNFTBatchIsAtomic(t *testing.T) {
	t.Run("portmap", func(t *testing.T) {
		node := testenv.NewNode(t)
		// A prerouting chain of another type in the IPv6 table: our "add chain" fails on it.
		node.MustExec(t, "nft", "add table ip6 cni_hostport; add chain ip6 cni_hostport prerouting { type filter hook prerouting priority 0; }")
		before := node.MustExec(t, "nft", "list", "ruleset")
		_, _, err := nftOn(t, node, func() error { return SetupPortMap(nftPM("c1", 8000)) })
		if err == nil || !strings.Contains(err.Error(), "add chain ip6 cni_hostport prerouting") {
			t.Fatalf("want the failed message named, got %v", err)
		}
		if after := node.MustExec(t, "nft", "list", "ruleset"); after != before {
			t.Fatalf("a failed ADD changed the ruleset:\n%s", diffText(before, after))
		}
	})
	t.Run("masquerade", func(t *testing.T) {
		node := testenv.NewNode(t)
		must(t, node, func() error { return SetupMasq(nftDual("c0")) })
		node.MustExec(t, "nft", "delete chain inet cni_plugins_masquerade postrouting; add chain inet cni_plugins_masquerade postrouting { type filter hook postrouting priority 0; }")
		before := node.MustExec(t, "nft", "list", "ruleset")
		if _, _, err := nftOn(t, node, func() error { return SetupMasq(nftDual("c1")) }); err == nil {
			t.Fatal("ADD over a foreign postrouting chain succeeded")
		}
		if after := node.MustExec(t, "nft", "list", "ruleset"); after != before {
			t.Fatalf("a failed ADD changed the ruleset:\n%s", diffText(before, after))
		}
	})
}

// TestNFTConcurrentAdds: parallel ADDs on a fresh node (each its own process in real life,
// here its own netlink socket) all succeed and make the shared chains and rules once.
func TestNFTConcurrentAdds(t *testing.T) {
	node := testenv.NewNode(t)
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = node.Do(func() error {
				cid := fmt.Sprintf("ctr-%d", i)
				if err := SetupPortMap(nftPM(cid, 9000+2*i)); err != nil {
					return err
				}
				m := nftDual(cid)
				m.IPs = []netip.Prefix{netip.MustParsePrefix(fmt.Sprintf("10.77.0.%d/24", 10+i)), netip.MustParsePrefix(fmt.Sprintf("fd77::%x/64", 10+i))}
				return SetupMasq(m)
			})
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD %d: %v", i, err)
		}
	}
	s := ruleset(t, node)
	for what, want := range map[string]int{
		"jump hostports_all": 4, "jump hostip_hostports": 2, "goto masq_checks": 1, " masquerade comment": 2*n + 3*n,
		"dnat to": 3 * n, "table ": 3,
	} {
		if got := strings.Count(s, what); got != want {
			t.Errorf("%q appears %d times, want %d", what, got, want)
		}
	}
	if t.Failed() {
		t.Log(s)
	}
}

// TestNFTMasqGC removes, by the hash in their comment, the rules of the network's container
// interfaces not in valid-attachments; other networks and other interfaces of a kept
// container are left alone (the comment hashes the ifname too).
func TestNFTMasqGC(t *testing.T) {
	node := testenv.NewNode(t)
	for _, id := range []string{"keep-1", "gone-1"} {
		must(t, node, func() error { return SetupMasq(nftDual(id)) })
	}
	net1 := nftDual("keep-1")
	net1.IfName = "net1"
	must(t, node, func() error { return SetupMasq(net1) })
	other := nftDual("gone-1")
	other.Network = "othernet"
	must(t, node, func() error { return SetupMasq(other) })
	must(t, node, func() error {
		return GCMasq("", "masqnet", []Attachment{{ContainerID: "keep-1", IfName: "eth0"}})
	})
	s := ruleset(t, node)
	for c, want := range map[string]bool{
		MasqNFTComment("masqnet", "eth0", "keep-1"):  true,
		MasqNFTComment("masqnet", "net1", "keep-1"):  false,
		MasqNFTComment("masqnet", "eth0", "gone-1"):  false,
		MasqNFTComment("othernet", "eth0", "gone-1"): true,
	} {
		if got := strings.Contains(s, c); got != want {
			t.Errorf("after GC, rules %q present=%v, want %v", c, got, want)
		}
	}
	if t.Failed() {
		t.Log(s)
	}
}

func TestMasqNFTComment(t *testing.T) {
	long := strings.Repeat("n", 200)
	for _, tc := range []struct{ net, ifName, cid, want string }{
		{"masqnet", "eth0", "c1", "net: masqnet, if: eth0, id: c1"},
		{`a"b`, "eth0", "c1", `net: ab, if: eth0, id: c1`},
		{long, "eth0", "c1", strings.Repeat("n", 128-len("5f7e9dfcbd9a5a5c-f4d01f2ef4b92245, net: "))},
	} {
		c := MasqNFTComment(tc.net, tc.ifName, tc.cid)
		if !strings.HasPrefix(c, masqInstanceHash(tc.net, tc.ifName, tc.cid)+", ") || len(c) > 128 || !strings.HasSuffix(c, tc.want) {
			t.Errorf("comment %q", c)
		}
	}
}

// TestNFTConcurrentAddDel: parallel ADDs and DELs on a node with a few hundred pods (whose
// rule dumps span several netlink messages, which any commit meanwhile interrupts) all
// succeed and leave exactly the existing pods' rules.
func TestNFTConcurrentAddDel(t *testing.T) {
	node := testenv.NewNode(t)
	must(t, node, func() error {
		for i := 0; i < 300; i++ {
			p := benchPod(i, fmt.Sprintf("existing-%d", i))
			p.Backend = BackendNFTables
			if err := SetupPortMap(p); err != nil {
				return err
			}
		}
		return nil
	})
	want := ruleset(t, node)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 12; i++ {
				err := node.Do(func() error {
					p := benchPod(400+w, fmt.Sprintf("w%d-%d", w, i))
					p.Backend = BackendNFTables
					m := Masq{Backend: BackendNFTables, Network: p.Network, ContainerID: p.ContainerID, IfName: "eth0", IPs: p.IPs}
					if err := SetupPortMap(p); err != nil {
						return err
					}
					if err := SetupMasq(m); err != nil {
						return err
					}
					if err := TeardownMasq(m); err != nil {
						return err
					}
					return TeardownPortMap(p)
				})
				if err != nil {
					t.Errorf("worker %d, pod %d: %v", w, i, err)
				}
			}
		}(w)
	}
	wg.Wait()
	got := ruleset(t, node)
	if strings.Contains(got, `comment "w`) || strings.Contains(got, "id: w") || strings.Count(got, "dnat to") != strings.Count(want, "dnat to") {
		t.Fatalf("after parallel ADD and DEL, rules of the removed pods remain:\n%s", diffText(want, got))
	}
}

// TestNFTAddOnlyAddsRules: once the tables are in place, ADD of a new container sends only
// its rules: no table or chain declared again, no shared chain flushed (either would make the
// plugin's exit wait for the kernel to free the old objects an RCU grace period later). A
// shared chain that differs is rewritten, as the reference does.
func TestNFTAddOnlyAddsRules(t *testing.T) {
	node := testenv.NewNode(t)
	must(t, node, func() error { return SetupPortMap(nftPM("c0", 7000)) })
	must(t, node, func() error { return SetupMasq(nftDual("c0")) })
	onlyAdds := func(what string) {
		t.Helper()
		for _, op := range lastBatch {
			if !strings.HasPrefix(op, "add rule ") {
				t.Errorf("%s: batch holds %q", what, op)
			}
		}
	}
	must(t, node, func() error { return SetupPortMap(nftPM("c1", 8000)) })
	onlyAdds("portmap ADD")
	must(t, node, func() error { return SetupMasq(nftDual("c1")) })
	onlyAdds("masquerade ADD")
	if len(lastBatch) != 2 {
		t.Errorf("masquerade ADD of a dual-stack container: %d messages, want its 2 rules", len(lastBatch))
	}
	// Other conditions: prerouting and output are flushed and refilled.
	p := nftPM("c2", 9000)
	p.ConditionsV4 = []string{"ip saddr 10.0.0.0/8"}
	must(t, node, func() error { return SetupPortMap(p) })
	flushed := 0
	for _, op := range lastBatch {
		if strings.HasPrefix(op, "flush chain ip cni_hostport") {
			flushed++
		}
	}
	if flushed != 2 {
		t.Errorf("new conditions flushed %d IPv4 chains, want prerouting and output: %q", flushed, lastBatch)
	}
	if s := ruleset(t, node); strings.Count(s, "ip saddr 10.0.0.0/8 fib daddr type local jump hostports_all") != 2 {
		t.Errorf("conditions not in place:\n%s", s)
	}
}
