package netfilter

import (
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The reference bridge's nftables ipMasq layout (pkg/ip/ipmasq_nftables_linux.go of v1.9.1),
// one inet table for both families:
//
//	table inet cni_plugins_masquerade {
//		comment "Masquerading for plugins from github.com/containernetworking/plugins"
//		chain masq_checks {
//			comment "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
//			ip saddr 10.1.2.3 ip daddr != 10.1.2.0/24 masquerade comment "<hash>, net: <net>, if: <ifname>, id: <cid>"
//			ip6 saddr fd00::3 ip6 daddr != fd00::/64 masquerade comment "..."
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			ip daddr 224.0.0.0/4 return
//			ip6 daddr ff00::/8 return
//			goto masq_checks
//		}
//	}
//
// <hash> is 16 hex digits of sha512(network), '-', 16 hex digits of sha512(ifname ":" cid):
// DEL finds a container's rules by it, GC a network's by its first half. ADD rewrites
// postrouting (flush and three rules) and replaces the container's rules, as the reference's.

const (
	masqTable        = "cni_plugins_masquerade"
	masqChecks       = "masq_checks"
	masqPost         = "postrouting"
	masqTableComment = "Masquerading for plugins from github.com/containernetworking/plugins"
	masqChainComment = "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet"
	famInet          = byte(unix.NFPROTO_INET)
	famIP            = byte(unix.NFPROTO_IPV4)
	famIP6           = byte(unix.NFPROTO_IPV6)
)

func hash16(s string) string {
	sum := sha512.Sum512([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// masqNetHash starts the comment of every masquerade rule of network.
func masqNetHash(network string) string { return hash16(network) }

// masqInstanceHash starts the comment of the rules of one container interface.
func masqInstanceHash(network, ifName, containerID string) string {
	return masqNetHash(network) + "-" + hash16(ifName+":"+containerID)
}

// MasqNFTComment is the comment of a container interface's masquerade rules (nftables
// backend): its hash and a description without double quotes, cut to nft's 128 bytes.
func MasqNFTComment(network, ifName, containerID string) string {
	unq := func(s string) string { return strings.ReplaceAll(s, `"`, ``) }
	c := fmt.Sprintf("%s, net: %s, if: %s, id: %s", masqInstanceHash(network, ifName, containerID), unq(network), unq(ifName), unq(containerID))
	if len(c) > maxCommentLen {
		c = c[:maxCommentLen]
	}
	return c
}

var masqChains = []nftChainSpec{
	{name: masqChecks, comment: masqChainComment},
	{name: masqPost, base: &baseHook{typ: "nat", hook: unix.NF_INET_POST_ROUTING, priority: 100}},
}

// masqPostRules are the rules of the shared postrouting chain.
func masqPostRules() []nftRule {
	return []nftRule{
		newRule(famInet).addr("daddr", false, mustPrefix("224.0.0.0/4")).verdict(expr.VerdictReturn, "").rule(masqPost, ""),
		newRule(famInet).addr("daddr", false, mustPrefix("ff00::/8")).verdict(expr.VerdictReturn, "").rule(masqPost, ""),
		newRule(famInet).verdict(expr.VerdictGoto, masqChecks).rule(masqPost, ""),
	}
}

// masqIPRules are m's rules in masq_checks: one per address, in order.
func masqIPRules(m Masq) []nftRule {
	comment := MasqNFTComment(m.Network, m.IfName, m.ContainerID)
	var out []nftRule
	for _, p := range m.IPs {
		a := p.Addr().Unmap()
		out = append(out, newRule(famInet).
			addr("saddr", false, hostPrefixOf(a)).
			addr("daddr", true, p.Masked()).
			masquerade().rule(masqChecks, comment))
	}
	return out
}

// setupMasqNFT replaces m's rules, and makes the table and rewrites postrouting, in one batch.
func setupMasqNFT(m Masq) (err error) {
	defer nftLock()()
	c, err := nftGet()
	if err != nil {
		return err
	}
	defer func() { nftPut(c, err != nil) }()
	prefix := masqInstanceHash(m.Network, m.IfName, m.ContainerID)
	for attempt := 0; ; attempt++ {
		got, err := c.rulesOf(famInet, masqTable, "", func(ch string) bool { return ch == masqPost })
		if err != nil {
			return err
		}
		b := &nftBatch{}
		if err := c.addLayout(b, famInet, masqTable, masqTableComment, masqChains); err != nil {
			return err
		}
		var post []nftGotRule
		for _, g := range got {
			if g.chain == masqPost {
				post = append(post, g)
			}
		}
		// Rewritten as the reference does, unless it is exactly that already (sameRules).
		if want := masqPostRules(); !sameRules(famInet, post, want) {
			b.flushChain(famInet, masqTable, masqPost)
			for _, r := range want {
				b.addRule(famInet, masqTable, r)
			}
		}
		stale := 0
		for _, g := range got {
			if g.chain == masqChecks && strings.HasPrefix(g.comment, prefix) {
				b.delRule(famInet, masqTable, g)
				stale++
			}
		}
		for _, r := range masqIPRules(m) {
			b.addRule(famInet, masqTable, r)
		}
		err = c.commit(b)
		if err == nil || stale == 0 || !errors.Is(err, unix.ENOENT) || attempt+1 == maxAttempts {
			return err
		}
		// A rule read as stale went away meanwhile: read again.
	}
}

// teardownMasqNFT removes the container interface's rules from masq_checks (found by the
// hash in their comment; the addresses are not needed). The table and chains stay.
func teardownMasqNFT(m Masq) error {
	prefix := masqInstanceHash(m.Network, m.IfName, m.ContainerID)
	return nftDeleteRules(famInet, masqTable, masqChecks, func(g nftGotRule) bool {
		return strings.HasPrefix(g.comment, prefix)
	})
}

// gcMasqNFT removes the rules of network's container interfaces that are not in keep.
func gcMasqNFT(network string, keep []Attachment) error {
	valid := map[string]bool{}
	for _, a := range keep {
		valid[MasqNFTComment(network, a.IfName, a.ContainerID)] = true
	}
	prefix := masqNetHash(network)
	return nftDeleteRules(famInet, masqTable, masqChecks, func(g nftGotRule) bool {
		return strings.HasPrefix(g.comment, prefix) && !valid[g.comment]
	})
}

// checkMasqNFT reports every missing table, chain or rule of m by name.
func checkMasqNFT(m Masq) (err error) {
	defer nftLock()()
	c, err := nftGet()
	if err != nil {
		return err
	}
	defer func() { nftPut(c, err != nil) }()
	want := append(masqPostRules(), masqIPRules(m)...)
	return c.check(famInet, masqTable, masqChains, want)
}

// nftDeleteRules removes, in one batch, the rules of table (of one chain, or every chain when
// chain is ""; fam may be NFPROTO_UNSPEC for every family) that gone selects. A table that
// does not exist, or a kernel without nftables, holds nothing to remove.
func nftDeleteRules(fam byte, table, chain string, gone func(nftGotRule) bool) (err error) {
	defer nftLock()()
	c, err := nftGet()
	if err != nil {
		if nftUnavailable(err) {
			return nil
		}
		return err
	}
	defer func() { nftPut(c, err != nil) }()
	for attempt := 0; ; attempt++ {
		got, err := c.rules(fam, table, chain)
		if err != nil {
			if nftUnavailable(err) {
				return nil
			}
			return err
		}
		b := &nftBatch{}
		for _, g := range got {
			if gone(g) {
				b.delRule(g.fam, g.table, g)
			}
		}
		err = c.commit(b)
		if err == nil || !errors.Is(err, unix.ENOENT) || attempt+1 == maxAttempts {
			return err
		}
	}
}

// nftUnavailable tells a kernel (or netns) without nftables from a real failure.
func nftUnavailable(err error) bool {
	return errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EOPNOTSUPP)
}

// nftComment refuses a comment nft could not store (userdata holds at most 128 bytes).
func nftComment(c string) error {
	if len(c) > maxCommentLen {
		return fmt.Errorf("nftables comment %q is longer than %d bytes", c, maxCommentLen)
	}
	return nil
}
