package portmap_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// nftRuleset is `nft list ruleset` of the node's cni_hostport tables.
func nftRuleset(t testing.TB, node *testenv.Node) string {
	t.Helper()
	var out []string
	in := false
	for _, l := range strings.Split(node.MustExec(t, "nft", "list", "ruleset"), "\n") {
		if strings.HasPrefix(l, "table ") {
			in = strings.Contains(l, " cni_hostport ")
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

var nftHandleRE = regexp.MustCompile(`( \d+)+$`)

// nftBytecode is the kernel's encoding of the cni_hostport rules (`nft --debug=netlink list
// ruleset`), without rule handles.
func nftBytecode(t testing.TB, node *testenv.Node) string {
	t.Helper()
	var out []string
	in := false
	for _, l := range strings.Split(node.MustExec(t, "nft", "--debug=netlink", "list", "ruleset"), "\n") {
		if strings.HasPrefix(l, "table ") {
			break
		}
		if l != "" && !strings.HasPrefix(l, " ") {
			in = strings.Contains(l, " cni_hostport ")
		}
		if in {
			out = append(out, nftHandleRE.ReplaceAllString(l, ""))
		}
	}
	return strings.Join(out, "\n")
}

func sameNFT(t testing.TB, ref, ours *testenv.Node) {
	t.Helper()
	if a, b := nftRuleset(t, ref), nftRuleset(t, ours); a != b {
		t.Fatalf("nft list ruleset differs:\n--- reference\n%s\n--- ours\n%s", a, b)
	}
	if a, b := nftBytecode(t, ref), nftBytecode(t, ours); a != b {
		t.Fatalf("nft --debug=netlink list ruleset differs:\n--- reference\n%s\n--- ours\n%s", a, b)
	}
}

const nftBackend = `"backend":"nftables"`

func withNFT(extra string) string {
	if extra == "" {
		return nftBackend
	}
	return nftBackend + "," + extra
}

func lowerPorts() string {
	var m []string
	for i := 0; i < 17; i++ {
		m = append(m, fmt.Sprintf(`{"hostPort":%d,"containerPort":%d,"protocol":"tcp"}`, 7000+i, 70+i))
	}
	m = append(m, `{"hostPort":7200,"containerPort":72,"protocol":"udp"}`, `{"hostPort":7300,"containerPort":73,"protocol":"sctp"}`)
	return "[" + strings.Join(m, ",") + "]"
}

var nftCompareCases = []struct {
	name, extra, mappings, ref string
	addrs                      []string
}{
	{name: "dual-stack", mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
	{name: "ipv4-only", mappings: stdMappings, addrs: []string{"10.66.0.5/24"}},
	{name: "ipv6-only", mappings: stdMappings, addrs: []string{"fd66::5/64"}},
	{name: "snat-false", extra: `"snat":false`, mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
	// v1.9.1's nftables backend ignores masqAll; v1.10.0 honours it, as we do.
	{name: "masqAll-v1.10.0", extra: `"masqAll":true`, mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}, ref: "v1.10.0"},
	{name: "conditions", extra: `"conditionsV4":["ip","saddr","10.0.0.0/8","iifname","!=","\"lo\""],"conditionsV6":["ip6 saddr != fd00::/8 iifname \"veth*\""]`,
		mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
	{name: "many-ports", mappings: lowerPorts(), addrs: []string{"10.66.0.5/24"}},
	{name: "unspecified-hostIP", mappings: `[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"0.0.0.0"},{"hostPort":8081,"containerPort":81,"protocol":"udp","hostIP":"::"}]`,
		addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
}

// TestNFTMatchesReference runs the reference portmap v1.9.1 (v1.10.0 for masqAll) and ours with
// backend nftables on the same input in two nodes and compares `nft list ruleset` and the
// kernel's bytecode; then each implementation's CHECK accepts the other's rules and each DEL
// cleans the other's ADD, leaving another container's rules.
func TestNFTMatchesReference(t *testing.T) {
	for _, tc := range nftCompareCases {
		t.Run(tc.name, func(t *testing.T) {
			ourDir, ref := ours(t), testenv.RefPluginDir(t, testenv.RefVersion)
			if tc.ref != "" {
				ref = testenv.RefPluginDir(t, tc.ref)
			}
			extra := withNFT(tc.extra)
			conf := pmConf("pmnet", extra, tc.mappings, prevResult(tc.addrs...))
			noPrev := pmConf("pmnet", extra, tc.mappings, "")
			a, b := testenv.NewNode(t), testenv.NewNode(t)
			other := pmConf("othernet", extra, `[{"hostPort":6000,"containerPort":60,"protocol":"tcp"}]`, prevResult("10.66.0.9/24", "fd66::9/64"))
			testenv.Run(t, pmCall(ref, a, "ADD", "other", other)).MustSucceed(t)
			testenv.Run(t, pmCall(ourDir, b, "ADD", "other", other)).MustSucceed(t)
			sameNFT(t, a, b)
			base := nftRuleset(t, a)

			testenv.Run(t, pmCall(ref, a, "ADD", "ctr1", conf)).MustSucceed(t)
			testenv.Run(t, pmCall(ourDir, b, "ADD", "ctr1", conf)).MustSucceed(t)
			sameNFT(t, a, b)
			if !strings.Contains(nftRuleset(t, b), `comment "ctr1"`) {
				t.Fatalf("no rule of ctr1:\n%s", nftRuleset(t, b))
			}
			if s := nat(t, b); strings.Contains(s, "CNI") {
				t.Fatalf("the nftables backend wrote iptables rules:\n%s", s)
			}
			testenv.Run(t, pmCall(ourDir, a, "CHECK", "ctr1", conf)).MustSucceed(t)
			testenv.Run(t, pmCall(ref, b, "CHECK", "ctr1", conf)).MustSucceed(t)
			testenv.Run(t, pmCall(ourDir, a, "DEL", "ctr1", noPrev)).MustSucceed(t)
			testenv.Run(t, pmCall(ref, b, "DEL", "ctr1", noPrev)).MustSucceed(t)
			for _, n := range []*testenv.Node{a, b} {
				if got := nftRuleset(t, n); got != base {
					t.Fatalf("after DEL:\n%s\nwant:\n%s", got, base)
				}
			}
			// CHECK after DEL names what is missing.
			testenv.Run(t, pmCall(ourDir, a, "CHECK", "ctr1", conf)).MustFail(t, 999).ErrContains(t, "rule not found", "hostports", "dport")
		})
	}
}

// TestNFTCheckNamesWhatIsMissing: CHECK reports the missing table, chain or rule by name.
func TestNFTCheckNamesWhatIsMissing(t *testing.T) {
	node := testenv.NewNode(t)
	conf := pmConf("pmnet", nftBackend, stdMappings, prevResult("10.66.0.5/24", "fd66::5/64"))
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c1", conf)).MustFail(t, 999).ErrContains(t, "table ip cni_hostport not found", "table ip6 cni_hostport not found")
	testenv.Run(t, pmCall(ours(t), node, "ADD", "c1", conf)).MustSucceed(t)
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c1", conf)).MustSucceed(t)
	node.MustExec(t, "nft", "delete", "chain", "ip6", "cni_hostport", "masquerading")
	node.MustExec(t, "nft", "flush", "chain", "ip", "cni_hostport", "prerouting")
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c1", conf)).MustFail(t, 999).ErrContains(t,
		"chain ip6 cni_hostport masquerading not found", `ip cni_hostport prerouting: fib daddr type local jump hostports_all`)
	// ADD repairs it.
	testenv.Run(t, pmCall(ours(t), node, "ADD", "c1", conf)).MustSucceed(t)
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c1", conf)).MustSucceed(t)
}

// TestNFTRepeatedAddDoesNotDuplicate: a second ADD of the same container replaces its rules
// (the reference's appends a second copy).
func TestNFTRepeatedAddDoesNotDuplicate(t *testing.T) {
	node := testenv.NewNode(t)
	conf := pmConf("pmnet", nftBackend, stdMappings, prevResult("10.66.0.5/24", "fd66::5/64"))
	testenv.Run(t, pmCall(ours(t), node, "ADD", "c1", conf)).MustSucceed(t)
	want := nftRuleset(t, node)
	testenv.Run(t, pmCall(ours(t), node, "ADD", "c1", conf)).MustSucceed(t)
	if got := nftRuleset(t, node); got != want {
		t.Fatalf("second ADD changed the ruleset:\n%s\nwant:\n%s", got, want)
	}
}

// TestNFTNoProgram: with nothing on PATH (no nft, no iptables) every verb works with the
// nftables backend: no program is run.
func TestNFTNoProgram(t *testing.T) {
	node := testenv.NewNode(t)
	conf := pmConf("pmnet", nftBackend, stdMappings, prevResult("10.66.0.5/24", "fd66::5/64"))
	empty := []string{"PATH=" + t.TempDir()}
	for _, step := range []struct{ cmd, cid string }{{"ADD", "c1"}, {"ADD", "c2"}, {"CHECK", "c1"}, {"DEL", "c1"}, {"DEL", "c1"}} {
		c := pmCall(ours(t), node, step.cmd, step.cid, conf)
		c.Env = empty
		testenv.Run(t, c).MustSucceed(t)
	}
	gc := pmCall(ours(t), node, "GC", "", []byte(`{"cniVersion":"1.1.0","name":"pmnet","type":"portmap",`+nftBackend+`,"cni.dev/valid-attachments":[]}`))
	gc.Env = empty
	testenv.Run(t, gc).MustSucceed(t)
	if s := nftRuleset(t, node); strings.Contains(s, `comment "c`) {
		t.Fatalf("rules left:\n%s", s)
	}
	// With the key absent and no iptables program, the reference's choice is nftables.
	absent := pmCall(ours(t), node, "ADD", "c3", pmConf("pmnet", "", stdMappings, prevResult("10.66.0.7/24")))
	absent.Env = empty
	testenv.Run(t, absent).MustSucceed(t)
	if s := nftRuleset(t, node); !strings.Contains(s, `comment "c3"`) {
		t.Fatalf("absent backend key without iptables did not pick nftables:\n%s", s)
	}
}

// TestNFTMixedBackends: a container added under one backend is removed by a DEL whose config
// names the other (ours cleans both; the reference's portmap cleans only the configured one).
func TestNFTMixedBackends(t *testing.T) {
	prev := prevResult("10.66.0.5/24", "fd66::5/64")
	for _, tc := range []struct{ add, del string }{{nftBackend, `"backend":"iptables"`}, {`"backend":"iptables"`, nftBackend}} {
		t.Run(tc.add+"->"+tc.del, func(t *testing.T) {
			node := testenv.NewNode(t)
			testenv.Run(t, pmCall(ours(t), node, "ADD", "c1", pmConf("pmnet", tc.add, stdMappings, prev))).MustSucceed(t)
			if !strings.Contains(nat(t, node)+nftRuleset(t, node), "c1") {
				t.Fatal("ADD made nothing")
			}
			testenv.Run(t, pmCall(ours(t), node, "DEL", "c1", pmConf("pmnet", tc.del, stdMappings, ""))).MustSucceed(t)
			noCNI(t, node)
			if s := nftRuleset(t, node); strings.Contains(s, "c1") {
				t.Fatalf("rules left:\n%s", s)
			}
		})
	}
}

// TestNFTGC removes, by comment, the rules of containers not in valid-attachments, in both
// families and both backends.
func TestNFTGC(t *testing.T) {
	node := testenv.NewNode(t)
	for _, id := range []string{"keep", "gone1", "gone2"} {
		conf := pmConf("pmnet", nftBackend, stdMappings, prevResult("10.66.0.5/24", "fd66::5/64"))
		testenv.Run(t, pmCall(ours(t), node, "ADD", id, conf)).MustSucceed(t)
	}
	testenv.Run(t, pmCall(ours(t), node, "ADD", "gone3", pmConf("pmnet", "", stdMappings, prevResult("10.66.0.6/24")))).MustSucceed(t)
	gc := []byte(`{"cniVersion":"1.1.0","name":"pmnet","type":"portmap",` + nftBackend + `,"cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`)
	testenv.Run(t, pmCall(ours(t), node, "GC", "", gc)).MustSucceed(t)
	s := nftRuleset(t, node)
	if strings.Contains(s, "gone") || strings.Count(s, `comment "keep"`) != 9 {
		t.Fatalf("after GC:\n%s", s)
	}
	if n := nat(t, node); strings.Contains(n, "gone3") {
		t.Fatalf("iptables rules of gone3 left:\n%s", n)
	}
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "keep", pmConf("pmnet", nftBackend, stdMappings, prevResult("10.66.0.5/24", "fd66::5/64")))).MustSucceed(t)
}

// TestNFTBadInput: a clear error with the right code, and nothing changed.
func TestNFTBadInput(t *testing.T) {
	node := testenv.NewNode(t)
	prev := prevResult("10.66.0.5/24")
	long := strings.Repeat("a", 129)
	for _, tc := range []struct {
		name  string
		cid   string
		conf  []byte
		code  uint
		frags []string
	}{
		{"iptables conditions", "bad", pmConf("n", withNFT(`"conditionsV4":["-s","10.0.0.0/8"]`), stdMappings, prev), 7, []string{"conditionsV4", "iptables syntax", "nftables"}},
		{"unsupported condition", "bad", pmConf("n", withNFT(`"conditionsV4":["meta","mark","0x1"]`), stdMappings, prev), 2, []string{"conditionsV4", "meta mark"}},
		{"wrong family condition", "bad", pmConf("n", withNFT(`"conditionsV6":["ip saddr 10.0.0.0/8"]`), stdMappings, prev), 2, []string{"conditionsV6", "10.0.0.0/8"}},
		{"bad address condition", "bad", pmConf("n", withNFT(`"conditionsV4":["ip daddr 10.0.0.300"]`), stdMappings, prev), 2, []string{"conditionsV4", "10.0.0.300"}},
		{"externalSetMarkChain", "bad", pmConf("n", withNFT(`"externalSetMarkChain":"KUBE-MARK-MASQ"`), stdMappings, prev), 7, []string{"externalSetMarkChain", "nftables"}},
		{"container ID too long for a comment", long, pmConf("n", nftBackend, stdMappings, prev), 999, []string{"128"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testenv.Run(t, pmCall(ours(t), node, "ADD", tc.cid, tc.conf)).MustFail(t, tc.code).ErrContains(t, tc.frags...)
			if s := nftRuleset(t, node); s != "" {
				t.Fatalf("bad input changed the ruleset:\n%s", s)
			}
		})
	}
}

var _ = os.Getenv
var _ = filepath.Join
