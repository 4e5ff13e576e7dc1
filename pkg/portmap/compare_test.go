package portmap_test

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

// nat is the node's nat tables (both families) as iptables-save prints them, without
// comment lines and counters.
func nat(t testing.TB, node *testenv.Node) string {
	t.Helper()
	var b strings.Builder
	for _, prog := range []string{"iptables-save", "ip6tables-save"} {
		b.WriteString("## " + prog + "\n")
		for _, l := range strings.Split(node.MustExec(t, prog, "-t", "nat"), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				b.WriteString(counterRE.ReplaceAllString(l, "[0:0]") + "\n")
			}
		}
	}
	return b.String()
}

func noCNI(t testing.TB, node *testenv.Node) {
	t.Helper()
	s := nat(t, node)
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, "CNI-DN-") || strings.Contains(l, "dnat name") {
			t.Fatalf("container rules left behind:\n%s", s)
		}
	}
}

// prevResult is a bridge-like result: bridge, host veth, container eth0 with the addresses.
func prevResult(addrs ...string) string {
	var ips []string
	for _, a := range addrs {
		ips = append(ips, fmt.Sprintf(`{"address":%q,"interface":2}`, a))
	}
	return `{"cniVersion":"1.0.0","interfaces":[{"name":"cnip0"},{"name":"veth0"},{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[` + strings.Join(ips, ",") + `]}`
}

// pmConf is a portmap config; extra is more top-level keys ("" for none).
func pmConf(name, extra, mappings, prev string) []byte {
	s := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"portmap","capabilities":{"portMappings":true}`, name)
	if extra != "" {
		s += "," + extra
	}
	s += `,"runtimeConfig":{"portMappings":` + mappings + `}`
	if prev != "" {
		s += `,"prevResult":` + prev
	}
	return []byte(s + "}")
}

func pmCall(dir string, node *testenv.Node, cmd, cid string, conf []byte) testenv.Call {
	return testenv.Call{
		Bin: filepath.Join(dir, "portmap"), Command: cmd, ContainerID: cid, Netns: "/var/run/netns/x",
		IfName: "eth0", In: node.NS, Config: conf,
	}
}

const stdMappings = `[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"},
	{"hostPort":9090,"containerPort":90,"protocol":"tcp","hostIP":"10.55.0.1"},{"hostPort":9191,"containerPort":91,"protocol":"tcp","hostIP":"fd55::1"}]`

var compareCases = []struct {
	name, extra, mappings string
	addrs                 []string
	setup                 []string // commands run in both nodes first
}{
	{name: "dual-stack", mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
	{name: "ipv4-only", mappings: stdMappings, addrs: []string{"10.66.0.5/24"}},
	{name: "ipv6-only", mappings: stdMappings, addrs: []string{"fd66::5/64"}},
	{name: "snat-false", extra: `"snat":false`, mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
	{name: "masqAll", extra: `"masqAll":true`, mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
	{name: "markMasqBit", extra: `"markMasqBit":31`, mappings: stdMappings, addrs: []string{"10.66.0.5/24"}},
	{name: "externalSetMarkChain", extra: `"externalSetMarkChain":"KUBE-MARK-MASQ"`, mappings: stdMappings,
		addrs: []string{"10.66.0.5/24"}, setup: []string{"iptables -t nat -N KUBE-MARK-MASQ", "ip6tables -t nat -N KUBE-MARK-MASQ"}},
	{name: "conditions", extra: `"conditionsV4":["-s","10.0.0.0/8","!","-i","lo"],"conditionsV6":["!","-s","fd00::/8"]`,
		mappings: stdMappings, addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
	{name: "many-ports-and-cases", mappings: manyPorts(), addrs: []string{"10.66.0.5/24"}},
	{name: "unspecified-hostIP", mappings: `[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"0.0.0.0"},{"hostPort":8081,"containerPort":81,"protocol":"udp","hostIP":"::"}]`,
		addrs: []string{"10.66.0.5/24", "fd66::5/64"}},
}

func manyPorts() string {
	var m []map[string]any
	for i := 0; i < 17; i++ {
		m = append(m, map[string]any{"hostPort": 7000 + i, "containerPort": 70 + i, "protocol": "tcp"})
	}
	m = append(m, map[string]any{"hostPort": 7100, "containerPort": 71, "protocol": "TCP"},
		map[string]any{"hostPort": 7200, "containerPort": 72, "protocol": "Udp"},
		map[string]any{"hostPort": 7300, "containerPort": 73, "protocol": "sctp"})
	b, _ := json.Marshal(m)
	return string(b)
}

// TestMatchesReference runs the reference portmap v1.9.1 and ours on the same input in two
// nodes and compares iptables-save; then each implementation's DEL cleans the other's ADD, and
// each one's CHECK accepts the other's rules.
func TestMatchesReference(t *testing.T) {
	ours, ref := testenv.PluginDir(t), testenv.RefPluginDir(t, testenv.RefVersion)
	for _, tc := range compareCases {
		t.Run(tc.name, func(t *testing.T) {
			conf := pmConf("pmnet", tc.extra, tc.mappings, prevResult(tc.addrs...))
			noPrev := pmConf("pmnet", tc.extra, tc.mappings, "")
			a, b := testenv.NewNode(t), testenv.NewNode(t)
			for _, n := range []*testenv.Node{a, b} {
				for _, s := range tc.setup {
					f := strings.Fields(s)
					n.MustExec(t, f[0], f[1:]...)
				}
			}
			// A container of another network first, so the shared chains exist already.
			other := pmConf("othernet", tc.extra, `[{"hostPort":6000,"containerPort":60,"protocol":"tcp"}]`, prevResult("10.66.0.9/24", "fd66::9/64"))
			testenv.Run(t, pmCall(ref, a, "ADD", "other", other)).MustSucceed(t)
			testenv.Run(t, pmCall(ours, b, "ADD", "other", other)).MustSucceed(t)
			base := nat(t, a)
			if nat(t, b) != base {
				t.Fatalf("first container differs:\n--- reference\n%s\n--- ours\n%s", base, nat(t, b))
			}

			testenv.Run(t, pmCall(ref, a, "ADD", "ctr1", conf)).MustSucceed(t)
			testenv.Run(t, pmCall(ours, b, "ADD", "ctr1", conf)).MustSucceed(t)
			want, got := nat(t, a), nat(t, b)
			if want != got {
				t.Fatalf("iptables-save differs:\n--- reference\n%s\n--- ours\n%s", want, got)
			}
			// Each CHECK accepts the other's rules.
			c := pmCall(ours, a, "CHECK", "ctr1", conf)
			testenv.Run(t, c).MustSucceed(t)
			c = pmCall(ref, b, "CHECK", "ctr1", conf)
			testenv.Run(t, c).MustSucceed(t)
			// Each DEL (without prevResult) cleans the other's ADD, leaving the other network's.
			testenv.Run(t, pmCall(ours, a, "DEL", "ctr1", noPrev)).MustSucceed(t)
			testenv.Run(t, pmCall(ref, b, "DEL", "ctr1", noPrev)).MustSucceed(t)
			for _, n := range []*testenv.Node{a, b} {
				if got := nat(t, n); got != base {
					t.Fatalf("after DEL:\n%s\nwant:\n%s", got, base)
				}
			}
			testenv.Run(t, pmCall(ours, a, "DEL", "other", other)).MustSucceed(t)
			noCNI(t, a)
		})
	}
}
