package netfilter

import (
	"strings"
	"testing"
)

// FuzzNFTConditions: any conditionsV4/V6 text either is refused with an error or compiles to
// expressions that encode; an accepted text renders back (its rule text) to one that compiles
// to the same expressions.
func FuzzNFTConditions(f *testing.F) {
	for _, s := range []string{"ip saddr 10.0.0.0/8", `iifname != "lo*"`, "ip6 daddr fd00::/8", "meta oifname eth0",
		"ip daddr == 1.2.3.4 ip saddr != 0.0.0.0/0", `"`, "ip saddr", "ip6 saddr ::ffff:1.2.3.4"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, v6 bool) {
		fam := IPv4
		if v6 {
			fam = IPv6
		}
		b := newRule(nftFam(fam))
		if err := b.conditions(fam, []string{s}); err != nil {
			return
		}
		want := marshalExprs(nftFam(fam), b.exprs)
		again := newRule(nftFam(fam))
		text := strings.Join(b.text, " ")
		if err := again.conditions(fam, []string{text}); err != nil {
			t.Fatalf("%q was accepted, its text %q is not: %v", s, text, err)
		}
		if got := marshalExprs(nftFam(fam), again.exprs); string(got) != string(want) {
			t.Fatalf("%q and its text %q compile differently", s, text)
		}
	})
}
