package netfilter

import (
	"os/exec"
	"strings"
)

// ResolveBackend is the backend a config asks for: its value, or when the key is absent ("")
// the reference's choice: iptables, unless only nftables is usable on the node.
func ResolveBackend(value string) string {
	if value != "" {
		return value
	}
	return DefaultBackend()
}

// DefaultBackend is the reference's choice for an absent backend key: iptables when its
// programs are installed (this engine runs iptables-restore; the reference asks the iptables
// program), else nftables when the kernel answers nftables netlink requests (the reference
// asks the nft program; this engine needs none), else iptables. It runs no program.
func DefaultBackend() string {
	if _, err := exec.LookPath(ipt{IPv4}.prog("-restore")); err == nil {
		return BackendIPTables
	}
	if nftUsable() {
		return BackendNFTables
	}
	return BackendIPTables
}

// iptablesMayHold tells whether the family's iptables nat table may hold a chain that want
// selects. With iptables-nft one netlink dump of the chain names answers, so a GC on a node
// without such chains runs no iptables program; otherwise the answer is yes.
func iptablesMayHold(f Family, want func(chain string) bool) bool {
	if !iptablesOnNFT(f) {
		return true
	}
	c, err := nftGet()
	if err != nil {
		return true
	}
	names, err := c.chainNames(nftFam(f), "nat")
	nftPut(c, err != nil)
	if err != nil {
		return true
	}
	for _, n := range names {
		if want(n) {
			return true
		}
	}
	return false
}

// isMasqChain: CNI-<24 hex digits>, the bridge's per-container masquerade chain.
func isMasqChain(name string) bool {
	if len(name) != maxChainLen || !strings.HasPrefix(name, "CNI-") {
		return false
	}
	for _, c := range name[4:] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isDNATChain(name string) bool { return name == chainDNAT }

// iptablesInstalled tells whether the family's iptables-restore is on PATH. A DEL on a node
// without it skips the iptables backend, as the reference's does.
func iptablesInstalled(f Family) bool {
	_, err := exec.LookPath(ipt{f}.prog("-restore"))
	return err == nil
}

// iptablesChainGone tells, with iptables-nft, that the family's nat table has no chain of
// that name (so nothing jumps to it either, and a teardown has nothing to do), over the
// engine's pooled netlink socket. False when it cannot tell.
func iptablesChainGone(f Family, chain string) bool {
	if !iptablesOnNFT(f) {
		return false
	}
	c, err := nftGet()
	if err != nil {
		return false
	}
	exists, err := c.chainExists(nftFam(f), "nat", chain)
	nftPut(c, err != nil)
	return err == nil && !exists
}
