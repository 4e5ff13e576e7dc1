package netfilter

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// ruleset is `nft list ruleset` in the node, without iptables-nft's tables (ip/ip6 nat,
// filter...), which hold the iptables backend's rules.
func ruleset(t testing.TB, node *testenv.Node) string {
	t.Helper()
	return onlyCNITables(node.MustExec(t, "nft", "list", "ruleset"))
}

// bytecode is `nft --debug=netlink list ruleset` (the kernel's encoding of every expression
// and userdata) of the CNI tables, without rule handles.
func bytecode(t testing.TB, node *testenv.Node) string {
	t.Helper()
	out := node.MustExec(t, "nft", "--debug=netlink", "list", "ruleset")
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "table ") {
			break // the listing after the bytecode
		}
		keep = append(keep, handleRE.ReplaceAllString(l, ""))
	}
	var cni []string
	in := false
	for _, l := range keep {
		if l != "" && !strings.HasPrefix(l, " ") && !strings.HasPrefix(l, "\t") {
			in = strings.Contains(l, " cni_hostport ") || strings.Contains(l, " cni_plugins_masquerade ")
		}
		if in {
			cni = append(cni, l)
		}
	}
	return strings.Join(cni, "\n")
}

var handleRE = regexp.MustCompile(`( \d+)+$`)

// onlyCNITables keeps the cni_hostport and cni_plugins_masquerade tables of a listing.
func onlyCNITables(s string) string {
	var out []string
	in := false
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "table ") {
			in = strings.Contains(l, " cni_hostport ") || strings.Contains(l, " cni_plugins_masquerade ")
		}
		if in {
			out = append(out, l)
		}
		if l == "}" {
			in = false
		}
	}
	return strings.Join(out, "\n")
}

// sameRuleset fails the test unless both nodes' CNI nftables tables print and encode alike.
func sameRuleset(t testing.TB, ref, ours *testenv.Node) {
	t.Helper()
	a, b := ruleset(t, ref), ruleset(t, ours)
	if a != b {
		t.Fatalf("nft list ruleset differs:\n%s\n--- reference:\n%s\n--- ours:\n%s", diffText(a, b), a, b)
	}
	a, b = bytecode(t, ref), bytecode(t, ours)
	if a != b {
		t.Fatalf("nft --debug=netlink list ruleset differs:\n%s", diffText(a, b))
	}
}

func nftBridgeConf(t testing.TB, name, backend, ranges string) string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"bridge","bridge":"cnib0","isGateway":%v,
		"ipMasq":true,"ipMasqBackend":%q,"ipam":{"type":"host-local","dataDir":%q,"ranges":%s}}`, name, ranges != twoV4Ranges, backend, t.TempDir(), ranges)
}

// ops runs fn in the node's netns and returns the iptables programs it ran and its error.
func nftOn(t testing.TB, node *testenv.Node, fn func() error) (progs, nl int64, err error) {
	t.Helper()
	p, n := Execs(), NFTOps()
	err = node.Do(fn)
	return Execs() - p, NFTOps() - n, err
}

func init() { recordBatches = true }
