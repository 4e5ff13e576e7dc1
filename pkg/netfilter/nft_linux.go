package netfilter

import (
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Teardown over nftables netlink. With iptables on its nf_tables backend (iptables-nft), the
// rules iptables-restore wrote are nftables rules: a container's chain and the jumps to it can
// be found with two small netlink dumps and removed in one atomic netlink batch, by rule
// handle, without running a program and without the whole-table cache that a -D makes
// iptables-nft fetch. Nothing is written this way but deletions, so no iptables match or
// target ever has to be encoded here.

var (
	nftOnce    sync.Once
	nftBackend map[Family]bool
)

// iptablesOnNFT tells whether the family's iptables-restore is iptables-nft (it resolves to
// xtables-nft-multi). A wrapper script or the legacy backend gives false: their rules may
// live where netlink does not see them, so the iptables-restore path is used.
func iptablesOnNFT(f Family) bool {
	nftOnce.Do(func() {
		nftBackend = map[Family]bool{}
		for _, fam := range []Family{IPv4, IPv6} {
			p, err := exec.LookPath(ipt{fam}.prog("-restore"))
			if err != nil {
				continue
			}
			real, err := filepath.EvalSymlinks(p)
			nftBackend[fam] = err == nil && strings.Contains(filepath.Base(real), "nft")
		}
	})
	return nftBackend[f]
}

// resetBackendCache forgets iptablesOnNFT's answers (tests change PATH).
func resetBackendCache() { nftOnce = sync.Once{} }

func jumpsTo(r *nftables.Rule, chain string) bool {
	for _, e := range r.Exprs {
		if v, ok := e.(*expr.Verdict); ok && (v.Kind == expr.VerdictJump || v.Kind == expr.VerdictGoto) && v.Chain == chain {
			return true
		}
	}
	return false
}

// nftTeardown removes target and every rule of the chains in from that jumps to it, in one
// netlink batch, in the caller's network namespace. done is false when this path does not
// apply (iptables not on nf_tables, a dump it cannot read, a batch that keeps failing): the
// caller then uses iptables-restore, which also reports what is wrong.
func nftTeardown(f Family, from []string, target string) (done bool) {
	if !iptablesOnNFT(f) {
		return false
	}
	fam := nftables.TableFamilyIPv4
	if f == IPv6 {
		fam = nftables.TableFamilyIPv6
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return false
	}
	defer c.CloseLasting()
	table := &nftables.Table{Name: "nat", Family: fam}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if _, err := c.ListChain(table, target); err != nil {
			// Absent (or no nat table at all): nothing can jump to it either.
			return isNotFound(err)
		}
		for _, name := range from {
			rules, err := c.GetRules(table, &nftables.Chain{Name: name, Table: table})
			if err != nil {
				if isNotFound(err) {
					continue
				}
				return false
			}
			for _, r := range rules {
				if jumpsTo(r, target) {
					if err := c.DelRule(r); err != nil {
						return false
					}
				}
			}
		}
		ch := &nftables.Chain{Name: target, Table: table}
		c.FlushChain(ch)
		c.DelChain(ch)
		if err := c.Flush(); err == nil {
			return true
		}
		// A concurrent change (a rule gone, a new jump): read again.
	}
	return false
}

func isNotFound(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "no such file or directory") || strings.Contains(err.Error(), "ENOENT"))
}
