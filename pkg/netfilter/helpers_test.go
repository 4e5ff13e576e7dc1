package netfilter

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

// natSave is the node's nat table of one family as iptables-save prints it, without the
// comment lines and counters.
func natSave(t testing.TB, node *testenv.Node, f Family) string {
	t.Helper()
	prog := "iptables-save"
	if f == IPv6 {
		prog = "ip6tables-save"
	}
	out := node.MustExec(t, prog, "-t", "nat")
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			keep = append(keep, counterRE.ReplaceAllString(l, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}

// natBoth is natSave of both families.
func natBoth(t testing.TB, node *testenv.Node) string {
	return "## IPv4\n" + natSave(t, node, IPv4) + "\n## IPv6\n" + natSave(t, node, IPv6)
}

// noCNI fails the test when the node's nat tables hold anything of CNI's.
func noCNI(t testing.TB, node *testenv.Node) {
	t.Helper()
	if s := natBoth(t, node); strings.Contains(s, "CNI") {
		t.Fatalf("CNI rules left behind:\n%s", s)
	}
}

// on runs fn in the node's netns and returns its error, counting the programs it ran.
func on(t testing.TB, node *testenv.Node, fn func() error) (int64, error) {
	t.Helper()
	before := Execs()
	err := node.Do(fn)
	return Execs() - before, err
}

// must is on that fails the test on error.
func must(t testing.TB, node *testenv.Node, fn func() error) int64 {
	t.Helper()
	n, err := on(t, node, fn)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func diffText(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("line %d:\n  ref:  %s\n  ours: %s", i+1, x, y))
		}
	}
	return strings.Join(out, "\n")
}

// sameTables fails the test unless both nodes' nat tables are equal, line by line.
func sameTables(t testing.TB, ref, ours *testenv.Node) {
	t.Helper()
	a, b := natBoth(t, ref), natBoth(t, ours)
	if a != b {
		t.Fatalf("nat tables differ:\n%s\n--- reference:\n%s\n--- ours:\n%s", diffText(a, b), a, b)
	}
}

// refBridge runs the reference bridge (with the reference host-local) in node for pod.
func refBridge(t testing.TB, node *testenv.Node, pod *testenv.NS, cmd, cid string, conf string) testenv.Out {
	t.Helper()
	dir := testenv.RefPluginDir(t, testenv.RefVersion)
	return testenv.Run(t, testenv.Call{
		Bin: filepath.Join(dir, "bridge"), Command: cmd, ContainerID: cid, Netns: pod.Path,
		IfName: "eth0", In: node.NS, Config: []byte(conf),
	})
}

// resultIPs are the addresses of a result on stdout, with their prefix lengths.
func resultIPs(t testing.TB, stdout []byte) []netip.Prefix {
	t.Helper()
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(stdout, &r); err != nil {
		t.Fatalf("result: %v: %s", err, stdout)
	}
	var out []netip.Prefix
	for _, ip := range r.IPs {
		out = append(out, netip.MustParsePrefix(ip.Address))
	}
	return out
}

// viaRestore makes the engine use its iptables-restore path for the rest of the test, as on a
// node with legacy iptables or a wrapper script: PATH gets wrapper scripts in front of the
// real programs, which iptablesOnNFT does not take for iptables-nft.
func viaRestore(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for _, p := range []string{"iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore"} {
		real, err := execLookPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("#!/bin/sh\nexec "+real+" \"$@\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	if iptablesOnNFT(IPv4) {
		t.Fatal("wrapper scripts taken for iptables-nft")
	}
}
