package netfilter

import (
	"errors"
	"fmt"
	"net/netip"
)

// The reference bridge's ipMasq layout (pkg/ip/ipmasq_iptables_linux.go of v1.9.1), per family:
//
//	-A POSTROUTING -s <ip>/<32|128> -m comment --comment "name: \"<net>\" id: \"<cid>\"" -j CNI-<hash>
//	-A CNI-<hash> -d <subnet> -m comment --comment ... -j ACCEPT
//	-A CNI-<hash> ! -d 224.0.0.0/4 (ff00::/8) -m comment --comment ... -j MASQUERADE
//
// With several IPs of one family the reference appends one ACCEPT per new subnet after the
// MASQUERADE rule, and one POSTROUTING jump per IP; so do we.

func multicastNet(f Family) string {
	if f == IPv6 {
		return "ff00::/8"
	}
	return "224.0.0.0/4"
}

// masqRules renders m for one family: the chain's rules and the POSTROUTING jumps, in order.
func masqRules(f Family, m Masq, ips []netip.Prefix) (chain string, rules, jumps []string) {
	chain = MasqChain(m.Network, m.ContainerID)
	c := "-m comment --comment " + quote(MasqComment(m.Network, m.ContainerID))
	seen := map[string]bool{}
	add := func(list *[]string, r string) {
		if !seen[r] {
			seen[r] = true
			*list = append(*list, r)
		}
	}
	for i, p := range ips {
		add(&rules, fmt.Sprintf("-d %s %s -j ACCEPT", p.Masked(), c))
		if i == 0 {
			add(&rules, fmt.Sprintf("! -d %s %s -j MASQUERADE", multicastNet(f), c))
		}
		add(&jumps, fmt.Sprintf("-s %s %s -j %s", netip.PrefixFrom(p.Addr(), p.Addr().BitLen()), c, chain))
	}
	return chain, rules, jumps
}

func setupMasqIPT(x ipt, m Masq, ips []netip.Prefix) error {
	chain, rules, jumps := masqRules(x.fam, m, ips)
	// Fast paths: a new container (-N fails the whole transaction when the chain exists); or
	// every rule in place already (a repeated ADD).
	fast := &tx{gate: "-N " + chain}
	fast.newChain(chain)
	for _, r := range rules {
		fast.appendRule(chain, r)
	}
	for _, j := range jumps {
		fast.appendRule("POSTROUTING", j)
	}
	return x.apply(func(st *table) (*tx, error) {
		t := &tx{}
		if !st.has(chain) {
			t.newChain(chain)
		}
		for _, r := range rules {
			if !st.hasRule(chain, r) {
				t.appendRule(chain, r)
			}
		}
		for _, j := range jumps {
			if !st.hasRule("POSTROUTING", j) {
				t.appendRule("POSTROUTING", j)
			}
		}
		return t, nil
	}, fast, masqCheckTx(chain, rules, jumps))
}

func masqCheckTx(chain string, rules, jumps []string) *tx {
	t := &tx{}
	for _, r := range rules {
		t.checkRule(chain, r)
	}
	for _, j := range jumps {
		t.checkRule("POSTROUTING", j)
	}
	return t
}

// teardownMasqIPT removes the container's chain and every POSTROUTING jump to it: with
// iptables-nft in one netlink batch (nftTeardown); otherwise, with the IPs known, it first
// tries the exact deletions, then whether the chain is absent, without reading state.
func teardownMasqIPT(x ipt, m Masq, ips []netip.Prefix) error {
	chain, _, jumps := masqRules(x.fam, m, ips)
	if nftTeardown(x.fam, []string{"POSTROUTING"}, chain) {
		return nil
	}
	var fast []*tx
	if len(ips) > 0 {
		del := &tx{}
		for _, j := range jumps {
			del.deleteRule("POSTROUTING", j)
		}
		del.deleteChain(chain)
		fast = append(fast, del, absent(chain))
	}
	return x.apply(func(st *table) (*tx, error) {
		t := &tx{}
		for _, r := range st.parsed("POSTROUTING") {
			if r.target == chain {
				t.deleteRule("POSTROUTING", r.spec)
			}
		}
		if st.has(chain) {
			t.deleteChain(chain)
		}
		return t, nil
	}, fast...)
}

func checkMasqIPT(x ipt, m Masq, ips []netip.Prefix) error {
	chain, rules, jumps := masqRules(x.fam, m, ips)
	if len(ips) > 0 {
		if err := x.restore(masqCheckTx(chain, rules, jumps)); err != nil {
			return missing(x, err)
		}
		return nil
	}
	st, err := x.save()
	if err != nil {
		return err
	}
	if !st.has(chain) {
		return fmt.Errorf("%s nat: masquerade chain %s of container %s not found", x.fam, chain, m.ContainerID)
	}
	comment := MasqComment(m.Network, m.ContainerID)
	for _, r := range st.parsed("POSTROUTING") {
		if r.target == chain && r.comment == comment {
			return nil
		}
	}
	return fmt.Errorf("%s nat: no POSTROUTING rule jumps to masquerade chain %s of container %s", x.fam, chain, m.ContainerID)
}

// missing turns a failed -C transaction into an error naming the missing rule.
func missing(x ipt, err error) error {
	var re *restoreError
	if errors.As(err, &re) && re.line != "" {
		return fmt.Errorf("%s nat: %s not found", x.fam, re.line[len("-C "):])
	}
	return fmt.Errorf("%s nat: checking rules: %w", x.fam, err)
}

func gcMasqIPT(x ipt, network string, keep map[string]bool) error {
	return x.apply(func(st *table) (*tx, error) {
		t := &tx{}
		gone := map[string]bool{}
		var order []string
		for _, r := range st.parsed("POSTROUTING") {
			n, id, ok := parseMasqComment(r.comment)
			if !ok || n != network || keep[id] || r.target != MasqChain(n, id) {
				continue
			}
			t.deleteRule("POSTROUTING", r.spec)
			if !gone[r.target] {
				gone[r.target] = true
				order = append(order, r.target)
			}
		}
		// Chains whose jumps are already gone (an ADD killed half way by an older plugin) are
		// found by the comment on their rules.
		for c := range st.chains {
			if gone[c] || len(c) != maxChainLen || st.rules[c] == nil {
				continue
			}
			n, id, ok := parseMasqComment(parseRule(st.rules[c][0]).comment)
			if ok && n == network && !keep[id] && c == MasqChain(n, id) {
				gone[c] = true
				order = append(order, c)
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
