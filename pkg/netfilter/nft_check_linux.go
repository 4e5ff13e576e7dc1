package netfilter

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// check reports, by name, every table, chain and rule of want that table does not hold: the
// table once, a missing chain once (not its rules), each missing rule with its nft text.
func (c *nftConn) check(fam byte, table string, chains []nftChainSpec, want []nftRule) error {
	ok, err := c.tableExists(fam, table)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("nftables: table %s %s not found", famName(fam), table)
	}
	got, err := c.rulesOf(fam, table, "", allChains)
	if err != nil {
		return err
	}
	byChain := map[string][]nftGotRule{}
	for _, g := range got {
		byChain[g.chain] = append(byChain[g.chain], g)
	}
	var errs []error
	missingChain := map[string]bool{}
	for _, ch := range chains {
		if len(byChain[ch.name]) > 0 {
			continue
		}
		exists, err := c.chainExists(fam, table, ch.name)
		if err != nil {
			return err
		}
		if !exists {
			missingChain[ch.name] = true
			errs = append(errs, fmt.Errorf("nftables: chain %s %s %s not found", famName(fam), table, ch.name))
		}
	}
	for _, r := range want {
		if missingChain[r.chain] {
			continue
		}
		if !hasRule(fam, byChain[r.chain], r) {
			errs = append(errs, fmt.Errorf("nftables: rule not found: %s", r.describe(fam, table)))
		}
	}
	return errors.Join(errs...)
}

func hasRule(fam byte, got []nftGotRule, r nftRule) bool {
	want := marshalExprs(fam, r.exprs)
	for _, g := range got {
		if g.comment == r.comment && exprsMatch(want, g.exprs) {
			return true
		}
	}
	return false
}

// exprsMatch compares an expression list we encode with one the kernel dumped: the same
// expressions in the same order, each attribute we set present with the same value. The
// kernel adds attributes it derives (a NAT's addr_max, a bitwise operation) and flags (a NAT
// with an address gets NF_NAT_RANGE_MAP_IPS), which are not compared.
func exprsMatch(want, got []byte) bool {
	wl, err1 := netlink.UnmarshalAttributes(want)
	gl, err2 := netlink.UnmarshalAttributes(got)
	if err1 != nil || err2 != nil || len(wl) != len(gl) {
		return false
	}
	for i := range wl {
		if !exprMatch(wl[i].Data, gl[i].Data) {
			return false
		}
	}
	return true
}

func exprMatch(want, got []byte) bool {
	wa, err1 := netlink.UnmarshalAttributes(want)
	ga, err2 := netlink.UnmarshalAttributes(got)
	if err1 != nil || err2 != nil {
		return false
	}
	name := func(as []netlink.Attribute) string {
		for _, a := range as {
			if a.Type&nlaTypeMask == unix.NFTA_EXPR_NAME {
				return string(bytes.TrimRight(a.Data, "\x00"))
			}
		}
		return ""
	}
	n := name(wa)
	if n == "" || n != name(ga) {
		return false
	}
	var wd, gd []byte
	for _, a := range wa {
		if a.Type&nlaTypeMask == unix.NFTA_EXPR_DATA {
			wd = a.Data
		}
	}
	for _, a := range ga {
		if a.Type&nlaTypeMask == unix.NFTA_EXPR_DATA {
			gd = a.Data
		}
	}
	skip := map[uint16]bool{}
	if n == "nat" {
		skip[unix.NFTA_NAT_FLAGS] = true
	}
	return attrsSubset(wd, gd, skip)
}

// attrsSubset: every attribute of want (but those in skip) is in got with the same value;
// nested ones compared the same way.
func attrsSubset(want, got []byte, skip map[uint16]bool) bool {
	wa, err1 := netlink.UnmarshalAttributes(want)
	ga, err2 := netlink.UnmarshalAttributes(got)
	if err1 != nil || err2 != nil {
		return false
	}
	for _, w := range wa {
		t := w.Type & nlaTypeMask
		if skip[t] {
			continue
		}
		found := false
		for _, g := range ga {
			if g.Type&nlaTypeMask != t {
				continue
			}
			if w.Type&unix.NLA_F_NESTED != 0 {
				found = attrsSubset(w.Data, g.Data, nil)
			} else {
				found = bytes.Equal(w.Data, g.Data)
			}
			break
		}
		if !found {
			return false
		}
	}
	return true
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func hostPrefixOf(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

// nlaTypeMask strips the nested and byte-order flags from an attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)

// sameRules tells whether got (a chain's rules, in order) are exactly want: then an ADD need
// not flush and refill the chain. Flushing deletes rules, and a deletion makes the kernel
// free the old rules an RCU grace period later; until then closing any nftables socket of the
// network namespace waits for it (the plugin's exit, milliseconds, tens under load).
func sameRules(fam byte, got []nftGotRule, want []nftRule) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if got[i].comment != want[i].comment || got[i].exprs == nil || !exprsMatch(marshalExprs(fam, want[i].exprs), got[i].exprs) {
			return false
		}
	}
	return true
}
