package netfilter

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The reference portmap's nftables layout (plugins/meta/portmap/portmap_nftables.go of
// v1.9.1), one table per family (ip, ip6), shared chains, every container rule commented with
// the container ID, masquerade without marks:
//
//	table ip cni_hostport {
//		comment "CNI portmap plugin"
//		chain hostports {                       one rule per mapping of the family:
//			[ip daddr <hostIP>] tcp dport 8080 dnat to 10.0.0.2:80 comment "<cid>"
//		}
//		chain hostip_hostports { }              kept, and cleaned, for older releases' rules
//		chain hostports_all { jump hostip_hostports; jump hostports }
//		chain prerouting { type nat hook prerouting priority dstnat; <conditions> fib daddr type local jump hostports_all }
//		chain output { type nat hook output priority -100; <conditions> fib daddr type local jump hostports_all }
//		chain masquerading {                    with snat only:
//			type nat hook postrouting priority srcnat;
//			ip saddr 10.0.0.2 ip daddr 10.0.0.2 masquerade comment "<cid>"     (hairpin)
//			ip saddr 127.0.0.1 ip daddr 10.0.0.2 masquerade comment "<cid>"    (localhost, IPv4)
//		}
//	}
//
// Every ADD rewrites hostports_all, prerouting and output (flush and re-add, with this
// config's conditions), as the reference's. Unlike the reference, an ADD first removes the
// container's own rules, so a repeated ADD does not duplicate them. masqAll is honoured as
// v1.10.0 does (ip saddr 0.0.0.0/0, no localhost rule); v1.9.1's nftables backend ignores it.

const (
	pmTable        = "cni_hostport"
	pmTableComment = "CNI portmap plugin"
	pmHostPorts    = "hostports"
	pmHostIPPorts  = "hostip_hostports"
	pmHostPortsAll = "hostports_all"
	pmMasquerading = "masquerading"
	pmPrerouting   = "prerouting"
	pmOutput       = "output"
	natDstPriority = -100
	natSrcPriority = 100
)

func pmSharedChain(name string) bool {
	return name == pmHostPortsAll || name == pmPrerouting || name == pmOutput
}

// pmOwnChains hold container rules (commented with the container ID).
var pmOwnChains = map[string]bool{pmHostPorts: true, pmHostIPPorts: true, pmMasquerading: true}

func nftFam(f Family) byte {
	if f == IPv6 {
		return famIP6
	}
	return famIP
}

// pmNFT is p rendered for one family's table.
type pmNFT struct {
	fam    byte
	chains []nftChainSpec // in the order the reference makes them
	shared []nftRule      // hostports_all, prerouting, output (each chain flushed first)
	own    []nftRule      // the container's rules
}

func renderPortMapNFT(f Family, p PortMap, ip netip.Prefix) (pmNFT, error) {
	fam := nftFam(f)
	r := pmNFT{fam: fam, chains: []nftChainSpec{
		{name: pmHostPorts}, {name: pmHostIPPorts}, {name: pmHostPortsAll},
		{name: pmPrerouting, base: &baseHook{typ: "nat", hook: unix.NF_INET_PRE_ROUTING, priority: natDstPriority}},
		{name: pmOutput, base: &baseHook{typ: "nat", hook: unix.NF_INET_LOCAL_OUT, priority: natDstPriority}},
	}}
	if p.SNAT {
		r.chains = append(r.chains, nftChainSpec{name: pmMasquerading, base: &baseHook{typ: "nat", hook: unix.NF_INET_POST_ROUTING, priority: natSrcPriority}})
	}
	r.shared = append(r.shared,
		newRule(fam).verdict(expr.VerdictJump, pmHostIPPorts).rule(pmHostPortsAll, ""),
		newRule(fam).verdict(expr.VerdictJump, pmHostPorts).rule(pmHostPortsAll, ""))
	conds := p.ConditionsV4
	if f == IPv6 {
		conds = p.ConditionsV6
	}
	for _, ch := range []string{pmPrerouting, pmOutput} {
		b := newRule(fam)
		if err := b.conditions(f, conds); err != nil {
			return r, err
		}
		r.shared = append(r.shared, b.fibLocal().verdict(expr.VerdictJump, pmHostPortsAll).rule(ch, ""))
	}

	pod := ip.Addr().Unmap()
	for _, m := range p.Mappings {
		b := newRule(fam)
		if m.HostIP.IsValid() {
			if familyOf(m.HostIP) != f {
				continue // the other family's table has it
			}
			if !m.HostIP.IsUnspecified() {
				b.addr("daddr", false, hostPrefixOf(m.HostIP.Unmap()))
			}
		}
		r.own = append(r.own, b.dport(lower(m.Protocol), m.HostPort).dnat(pod, m.ContainerPort).rule(pmHostPorts, p.ContainerID))
	}
	if p.SNAT {
		src := hostPrefixOf(pod)
		if p.MasqAll {
			src = netip.PrefixFrom(src.Addr(), 0).Masked()
		}
		r.own = append(r.own, newRule(fam).addr("saddr", false, src).addr("daddr", false, hostPrefixOf(pod)).masquerade().rule(pmMasquerading, p.ContainerID))
		if f == IPv4 && !p.MasqAll {
			r.own = append(r.own, newRule(fam).addr("saddr", false, mustPrefix("127.0.0.1/32")).addr("daddr", false, hostPrefixOf(pod)).masquerade().rule(pmMasquerading, p.ContainerID))
		}
	}
	return r, nil
}

// CheckNFTConditions tells whether conds (conditionsV4 or V6, nft syntax) can be programmed
// without the nft program.
func CheckNFTConditions(f Family, conds []string) error {
	return newRule(nftFam(f)).conditions(f, conds)
}

// renderAll renders p for each of its addresses (at most one per family).
func renderAllNFT(p PortMap) ([]pmNFT, error) {
	var out []pmNFT
	for _, ip := range p.IPs {
		r, err := renderPortMapNFT(familyOf(ip.Addr()), p, ip)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// setupPortMapNFT programs p for every family in one batch: the tables and shared chains as
// the reference makes them, the container's old rules out, its new rules in.
func setupPortMapNFT(p PortMap) (err error) {
	defer nftLock()()
	if err := nftComment(p.ContainerID); err != nil {
		return err
	}
	rs, err := renderAllNFT(p)
	if err != nil {
		return err
	}
	c, err := nftGet()
	if err != nil {
		return err
	}
	defer func() { nftPut(c, err != nil) }()
	for attempt := 0; ; attempt++ {
		var got []nftGotRule
		for _, r := range rs {
			g, err := c.rulesOf(r.fam, pmTable, "", pmSharedChain)
			if err != nil {
				return err
			}
			got = append(got, g...)
		}
		b := &nftBatch{}
		stale := 0
		for _, r := range rs {
			if err := c.addLayout(b, r.fam, pmTable, pmTableComment, r.chains); err != nil {
				return err
			}
			sharedAt := 0
			for _, ch := range r.chains {
				if !pmSharedChain(ch.name) {
					continue
				}
				// The reference flushes and refills hostports_all, prerouting and output
				// right after making each; so do we, unless they hold exactly that already.
				var want []nftRule
				for sharedAt < len(r.shared) && r.shared[sharedAt].chain == ch.name {
					want = append(want, r.shared[sharedAt])
					sharedAt++
				}
				var have []nftGotRule
				for _, g := range got {
					if g.fam == r.fam && g.chain == ch.name {
						have = append(have, g)
					}
				}
				if sameRules(r.fam, have, want) {
					continue
				}
				b.flushChain(r.fam, pmTable, ch.name)
				for _, w := range want {
					b.addRule(r.fam, pmTable, w)
				}
			}
			for _, g := range got {
				if g.fam == r.fam && pmOwnChains[g.chain] && g.comment == p.ContainerID {
					b.delRule(r.fam, pmTable, g)
					stale++
				}
			}
			for _, o := range r.own {
				b.addRule(r.fam, pmTable, o)
			}
		}
		err = c.commit(b)
		if err == nil || stale == 0 || !errors.Is(err, unix.ENOENT) || attempt+1 == maxAttempts {
			return err
		}
	}
}

// teardownPortMapNFT removes the container's rules from both families' tables (hostports,
// hostip_hostports, masquerading), in one batch; shared chains stay.
func teardownPortMapNFT(p PortMap) error {
	return nftDeleteRules(unix.NFPROTO_UNSPEC, pmTable, "", func(g nftGotRule) bool {
		return (g.fam == famIP || g.fam == famIP6) && pmOwnChains[g.chain] && g.comment == p.ContainerID
	})
}

// gcPortMapNFT removes the container rules of every container not in keep. The layout
// records no network name, so the container ID decides (a runtime lists the same sandboxes
// for each of its networks).
func gcPortMapNFT(keep map[string]bool) error {
	return nftDeleteRules(unix.NFPROTO_UNSPEC, pmTable, "", func(g nftGotRule) bool {
		return (g.fam == famIP || g.fam == famIP6) && pmOwnChains[g.chain] && g.comment != "" && !keep[g.comment]
	})
}

// checkPortMapNFT reports every missing table, chain or rule of p by name.
func checkPortMapNFT(p PortMap) (err error) {
	defer nftLock()()
	rs, err := renderAllNFT(p)
	if err != nil {
		return err
	}
	c, err := nftGet()
	if err != nil {
		return err
	}
	defer func() { nftPut(c, err != nil) }()
	var errs []error
	for _, r := range rs {
		if err := c.check(r.fam, pmTable, r.chains, append(append([]nftRule{}, r.shared...), r.own...)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("port mappings of %s: %w", p.ContainerID, errors.Join(errs...))
	}
	return nil
}
