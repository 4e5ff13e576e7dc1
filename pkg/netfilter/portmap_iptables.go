package netfilter

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// The reference portmap's iptables layout (plugins/meta/portmap of v1.9.1), nat table, per family:
//
//	PREROUTING, OUTPUT:    -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT          (appended)
//	POSTROUTING:           -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ (first)
//	CNI-HOSTPORT-SETMARK:  -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x2000/0x2000
//	CNI-HOSTPORT-MASQ:     -m mark --mark 0x2000/0x2000 -j MASQUERADE
//	CNI-HOSTPORT-DNAT:     -p <proto> -m comment --comment "dnat name: ..." -m multiport --dports <≤15 ports> [conditions] -j CNI-DN-<hash>
//	CNI-DN-<hash>, per mapping: hairpin mark (-s <pod subnet>), localhost mark (IPv4, -s 127.0.0.1), DNAT.
const (
	chainDNAT    = "CNI-HOSTPORT-DNAT"
	chainSetMark = "CNI-HOSTPORT-SETMARK"
	chainMasq    = "CNI-HOSTPORT-MASQ"
	chainOldSNAT = "CNI-HOSTPORT-SNAT"
)

const (
	ruleToDNAT    = "-m addrtype --dst-type LOCAL -j " + chainDNAT
	ruleToMasq    = `-m comment --comment "CNI portfwd requiring masquerade" -j ` + chainMasq
	commentSetMrk = `-m comment --comment "CNI portfwd masquerade mark"`
)

// pmRules is p rendered for one family.
type pmRules struct {
	snat              bool   // SETMARK and MASQ are ours to make
	setMark, masqMark string // their rules
	chain             string // CNI-DN-<hash>
	rules, entries    []string
}

// condArgs joins user-given match arguments, quoting those the restore parser would split.
func condArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'\\") {
			a = quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func renderPortMap(f Family, p PortMap, ip netip.Prefix) pmRules {
	r := pmRules{chain: DNATChain(p.Network, p.ContainerID)}
	mark := Mark(p.MarkMasqBit)
	setMarkChain := chainSetMark
	if p.ExternalSetMarkChain != "" {
		setMarkChain = p.ExternalSetMarkChain
	} else if p.SNAT {
		r.snat = true
		r.setMark = commentSetMrk + " -j MARK --set-xmark " + mark
		r.masqMark = "-m mark --mark " + mark + " -j MASQUERADE"
	}

	// Entry rules: one per protocol (sorted as given) and 15 ports, every mapping's host port
	// whatever its hostIP's family, as the reference does.
	comment := quote(DNATComment(p.Network, p.ContainerID))
	byProto := map[string][]string{}
	var protos []string
	for _, m := range p.Mappings {
		if _, ok := byProto[m.Protocol]; !ok {
			protos = append(protos, m.Protocol)
		}
		byProto[m.Protocol] = append(byProto[m.Protocol], strconv.Itoa(m.HostPort))
	}
	sort.Strings(protos)
	conds := p.ConditionsV4
	if f == IPv6 {
		conds = p.ConditionsV6
	}
	for _, proto := range protos {
		ports := byProto[proto]
		for len(ports) > 0 {
			n := min(15, len(ports))
			e := "-p " + lower(proto) + " -m comment --comment " + comment + " -m multiport --dports " + strings.Join(ports[:n], ",")
			if len(conds) > 0 {
				e += " " + condArgs(conds)
			}
			r.entries = append(r.entries, e+" -j "+r.chain)
			ports = ports[n:]
		}
	}

	for _, m := range p.Mappings {
		dst := ""
		if m.HostIP.IsValid() {
			if familyOf(m.HostIP) != f {
				continue
			}
			if !m.HostIP.IsUnspecified() {
				dst = "-d " + hostPrefix(m.HostIP.Unmap()) + " "
			}
		}
		proto := lower(m.Protocol)
		match := dst + "-p " + proto + " -m " + proto + " --dport " + strconv.Itoa(m.HostPort)
		if p.SNAT {
			src := "-s " + ip.Masked().String() + " "
			if p.MasqAll {
				src = "" // 0.0.0.0/0 and ::/0, which iptables-save does not print
			}
			r.rules = append(r.rules, src+match+" -j "+setMarkChain)
			if f == IPv4 && !p.MasqAll {
				r.rules = append(r.rules, "-s 127.0.0.1/32 "+match+" -j "+setMarkChain)
			}
		}
		to := ip.Addr().String() + ":" + strconv.Itoa(m.ContainerPort)
		if f == IPv6 {
			to = "[" + ip.Addr().String() + "]:" + strconv.Itoa(m.ContainerPort)
		}
		r.rules = append(r.rules, match+" -j DNAT --to-destination "+to)
	}
	return r
}

func setupPortMapIPT(x ipt, p PortMap, ip netip.Prefix) error {
	r := renderPortMap(x.fam, p, ip)
	// Fast paths, without reading state: (1) the container is new (-N fails when its chain
	// exists) and the shared chains exist: jumps to SETMARK and MASQ (then flushed) and the
	// appends to CNI-HOSTPORT-DNAT fail the whole transaction when one is missing. No -C here:
	// it makes iptables-nft fetch every rule of the table, which grows with the pods, whereas
	// these commands need only the chain list. The shared chains' own rules are made in the
	// same transaction as the chains, so their presence vouches for them. (2) Everything is in
	// place already (a repeated ADD): a transaction of -C checks only.
	fast := &tx{gate: "-N " + r.chain} // only "the chain exists" is worth the -C check
	fast.newChain(r.chain)
	if r.snat {
		fast.add("find chain "+chainSetMark, "-A "+r.chain+" -j "+chainSetMark)
		fast.add("find chain "+chainMasq, "-A "+r.chain+" -j "+chainMasq)
		fast.add("flush chain "+r.chain, "-F "+r.chain)
	}
	for _, s := range r.rules {
		fast.appendRule(r.chain, s)
	}
	for _, e := range r.entries {
		fast.appendRule(chainDNAT, e)
	}
	return x.apply(func(st *table) (*tx, error) {
		t := &tx{}
		ensure := func(chain, spec string, first bool) {
			if !st.has(chain) {
				t.newChain(chain)
				st.chains[chain] = true
			}
			if spec == "" || st.hasRule(chain, spec) {
				return
			}
			if first {
				t.insertRule(chain, spec)
			} else {
				t.appendRule(chain, spec)
			}
		}
		if r.snat {
			ensure(chainSetMark, r.setMark, false)
			ensure(chainMasq, r.masqMark, false)
			ensure("POSTROUTING", ruleToMasq, true)
		}
		ensure(chainDNAT, "", false)
		ensure("PREROUTING", ruleToDNAT, false)
		ensure("OUTPUT", ruleToDNAT, false)

		var entries []rule
		for _, e := range st.parsed(chainDNAT) {
			if e.target == r.chain {
				entries = append(entries, e)
			}
		}
		if st.has(r.chain) && equal(st.rules[r.chain], r.rules) && equalSpecs(entries, r.entries) {
			return t, nil
		}
		for _, e := range entries {
			t.deleteRule(chainDNAT, e.spec)
		}
		if st.has(r.chain) {
			t.add("flush chain "+r.chain, "-F "+r.chain)
		} else {
			t.newChain(r.chain)
		}
		for _, s := range r.rules {
			t.appendRule(r.chain, s)
		}
		for _, e := range r.entries {
			t.appendRule(chainDNAT, e)
		}
		return t, nil
	}, fast, checkTx(r))
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalSpecs(rs []rule, specs []string) bool {
	if len(rs) != len(specs) {
		return false
	}
	for i := range rs {
		if rs[i].spec != specs[i] {
			return false
		}
	}
	return true
}

// teardownPortMapIPT removes the container's chain and its entry rules (and the per-container
// SNAT chain of releases before v0.7, when present, on the iptables-restore path). With
// iptables-nft it is one netlink batch (nftTeardown). Otherwise, with the mappings known, it
// first tries the exact deletions, then whether the chain is absent (a repeated DEL, or a
// family the container did not use), without reading state.
func teardownPortMapIPT(x ipt, p PortMap) error {
	chain := DNATChain(p.Network, p.ContainerID)
	if nftTeardown(x.fam, []string{chainDNAT}, chain) {
		return nil
	}
	var fast []*tx
	if len(p.Mappings) > 0 {
		del := &tx{}
		for _, e := range renderPortMap(x.fam, p, netip.Prefix{}).entries {
			del.deleteRule(chainDNAT, e)
		}
		del.deleteChain(chain)
		fast = append(fast, del, absent(chain))
	}
	old := oldSNATChain(p.Network, p.ContainerID)
	return x.apply(func(st *table) (*tx, error) {
		t := &tx{}
		for _, c := range [][2]string{{chainDNAT, chain}, {chainOldSNAT, old}} {
			for _, e := range st.parsed(c[0]) {
				if e.target == c[1] {
					t.deleteRule(c[0], e.spec)
				}
			}
			if st.has(c[1]) {
				t.deleteChain(c[1])
			}
		}
		return t, nil
	}, fast...)
}

func checkPortMapIPT(x ipt, p PortMap, ip netip.Prefix) error {
	if err := x.restore(checkTx(renderPortMap(x.fam, p, ip))); err != nil {
		return missing(x, err)
	}
	return nil
}

// checkTx asserts, changing nothing, that every rule of r is in place.
func checkTx(r pmRules) *tx {
	t := &tx{}
	if r.snat {
		t.checkRule(chainSetMark, r.setMark)
		t.checkRule(chainMasq, r.masqMark)
		t.checkRule("POSTROUTING", ruleToMasq)
	}
	t.checkRule("PREROUTING", ruleToDNAT)
	t.checkRule("OUTPUT", ruleToDNAT)
	for _, s := range r.rules {
		t.checkRule(r.chain, s)
	}
	for _, e := range r.entries {
		t.checkRule(chainDNAT, e)
	}
	return t
}

func gcPortMapIPT(x ipt, network string, keep map[string]bool) error {
	return x.apply(func(st *table) (*tx, error) {
		t := &tx{}
		gone := map[string]bool{}
		var order []string
		for _, e := range st.parsed(chainDNAT) {
			n, id, ok := parseDNATComment(e.comment)
			if !ok || n != network || keep[id] || e.target != DNATChain(n, id) {
				continue
			}
			t.deleteRule(chainDNAT, e.spec)
			if !gone[e.target] {
				gone[e.target] = true
				order = append(order, e.target)
			}
		}
		for _, c := range order {
			if st.has(c) {
				t.deleteChain(c)
			}
		}
		return t, nil
	})
}
