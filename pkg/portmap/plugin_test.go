package portmap_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cni-suite/cni-suite/pkg/netfilter"
	"github.com/cni-suite/cni-suite/pkg/testenv"
)

var iptPrograms = []string{"iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"}

// shim is a PATH directory whose iptables programs log each run, then run the real one
// (or fail, for the programs named in broken).
type shim struct{ dir, log string }

func newShim(t testing.TB, broken ...string) *shim {
	t.Helper()
	s := &shim{dir: t.TempDir()}
	s.log = filepath.Join(s.dir, "runs.log")
	for _, p := range iptPrograms {
		real, err := execLookPath(p)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf("#!/bin/sh\necho %s >>%s\nexec %s \"$@\"\n", p, s.log, real)
		for _, b := range broken {
			if b == p {
				body = fmt.Sprintf("#!/bin/sh\necho %s >>%s\necho broken >&2\nexit 1\n", p, s.log)
			}
		}
		if err := os.WriteFile(filepath.Join(s.dir, p), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *shim) env() []string { return []string{"PATH=" + s.dir + ":" + os.Getenv("PATH")} }

// runs returns the programs run since the last call, and forgets them.
func (s *shim) runs() []string {
	b, _ := os.ReadFile(s.log)
	os.Remove(s.log)
	return strings.Fields(string(b))
}

func ours(t testing.TB) string { return testenv.PluginDir(t) }

// TestExecBudget counts the iptables programs one plugin run executes: per family at most
// one read and one restore, none without port mappings, none written when nothing changes.
func TestExecBudget(t *testing.T) {
	node := testenv.NewNode(t)
	sh := newShim(t)
	prev := prevResult("10.66.0.5/24", "fd66::5/64")
	conf := pmConf("pmnet", "", stdMappings, prev)
	run := func(cmd, cid string, c []byte) []string {
		call := pmCall(ours(t), node, cmd, cid, c)
		call.Env = sh.env()
		testenv.Run(t, call).MustSucceed(t)
		return sh.runs()
	}
	steps := []struct {
		name, cmd, cid string
		conf           []byte
		want, reads    int
		unchanged      bool
	}{
		// First container on the node: the optimistic restore fails on a missing shared chain
		// (so the -C check is not tried), then one read and one write, per family.
		{"first ADD", "ADD", "c0", conf, 6, 2, false},
		{"ADD", "ADD", "c1", conf, 2, 0, false},
		// A repeated ADD: the create transaction fails, the check transaction passes.
		{"ADD again", "ADD", "c1", conf, 4, 0, true},
		{"CHECK", "CHECK", "c1", conf, 2, 0, true},
		{"DEL", "DEL", "c1", conf, 2, 0, false},
		// A repeated DEL: the exact deletion fails, the absence probe passes.
		{"DEL again", "DEL", "c1", conf, 4, 0, true},
		{"ADD IPv4 only", "ADD", "c3", pmConf("pmnet", "", stdMappings, prevResult("10.66.0.7/24")), 1, 0, false},
		// Without prevResult both families: IPv6 was never used, its absence probe passes.
		{"DEL IPv4 only without prevResult", "DEL", "c3", pmConf("pmnet", "", stdMappings, ""), 3, 0, false},
		{"ADD without mappings", "ADD", "c2", pmConf("pmnet", "", "[]", prev), 0, 0, true},
		{"DEL without mappings", "DEL", "c2", pmConf("pmnet", "", "[]", ""), 0, 0, true},
	}
	for _, s := range steps {
		before := nat(t, node)
		got := run(s.cmd, s.cid, s.conf)
		if len(got) != s.want {
			t.Errorf("%s ran %d programs %v, want %d", s.name, len(got), got, s.want)
		}
		reads := 0
		for _, p := range got {
			if strings.HasSuffix(p, "-save") {
				reads++
			}
		}
		if reads != s.reads {
			t.Errorf("%s read the tables %d times, want %d", s.name, reads, s.reads)
		}
		for _, p := range got {
			if !strings.HasSuffix(p, "-save") && !strings.HasSuffix(p, "-restore") {
				t.Errorf("%s ran %s: want only iptables-save and iptables-restore", s.name, p)
			}
		}
		if s.unchanged && nat(t, node) != before {
			t.Errorf("%s changed the tables", s.name)
		}
	}
}

func TestBadInput(t *testing.T) {
	node := testenv.NewNode(t)
	prev := prevResult("10.66.0.5/24")
	for _, tc := range []struct {
		name  string
		cmd   string
		conf  []byte
		code  uint
		frags []string
	}{
		{"mark bit range", "ADD", pmConf("n", `"markMasqBit":32`, stdMappings, prev), 7, []string{"markMasqBit", "32"}},
		{"mark bit and external chain", "ADD", pmConf("n", `"markMasqBit":3,"externalSetMarkChain":"X"`, stdMappings, prev), 7, []string{"markMasqBit", "externalSetMarkChain"}},
		{"unknown backend", "DEL", pmConf("n", `"backend":"ipfw"`, stdMappings, ""), 2, []string{"backend", "ipfw"}},
		{"nft conditions", "ADD", pmConf("n", `"conditionsV4":["ip saddr 10.0.0.0/8"]`, stdMappings, prev), 7, []string{"conditionsV4"}},
		{"host port 0", "ADD", pmConf("n", "", `[{"hostPort":0,"containerPort":80,"protocol":"tcp"}]`, prev), 7, []string{"runtimeConfig.portMappings[0].hostPort"}},
		{"host port too big", "ADD", pmConf("n", "", `[{"hostPort":80,"containerPort":80,"protocol":"tcp"},{"hostPort":70000,"containerPort":80,"protocol":"tcp"}]`, prev), 7, []string{"portMappings[1].hostPort", "70000"}},
		{"container port", "CHECK", pmConf("n", "", `[{"hostPort":80,"containerPort":-1,"protocol":"tcp"}]`, prev), 7, []string{"containerPort"}},
		{"protocol", "ADD", pmConf("n", "", `[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]`, prev), 7, []string{"protocol", "icmp"}},
		{"hostIP", "ADD", pmConf("n", "", `[{"hostPort":80,"containerPort":80,"protocol":"tcp","hostIP":"10.1.1"}]`, prev), 7, []string{"hostIP", "10.1.1"}},
		{"no prevResult on ADD", "ADD", pmConf("n", "", stdMappings, ""), 7, []string{"prevResult"}},
		{"no prevResult on CHECK", "CHECK", pmConf("n", "", stdMappings, ""), 7, []string{"prevResult"}},
		{"snat type", "ADD", pmConf("n", `"snat":"yes"`, stdMappings, prev), 6, []string{"snat"}},
		{"mappings type", "ADD", pmConf("n", "", `{"hostPort":80}`, prev), 6, []string{"portMappings"}},
		{"prevResult type", "ADD", pmConf("n", "", stdMappings, `{"cniVersion":"1.0.0","ips":"x"}`), 6, []string{"prevResult"}},
		{"malformed", "ADD", []byte(`{"cniVersion":"1.0.0","name":"n","type":"portmap",`), 6, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testenv.Run(t, pmCall(ours(t), node, tc.cmd, "bad", tc.conf)).MustFail(t, tc.code)
			o.ErrContains(t, tc.frags...)
			if s := nat(t, node); strings.Contains(s, "CNI") {
				t.Fatalf("bad input changed the tables:\n%s", s)
			}
		})
	}
}

func TestNoMappingsPassesPrevResultThrough(t *testing.T) {
	node := testenv.NewNode(t)
	prev := prevResult("10.66.0.5/24", "fd66::5/64")
	o := testenv.Run(t, pmCall(ours(t), node, "ADD", "c", pmConf("n", "", "[]", prev))).MustSucceed(t)
	var got, want any
	json.Unmarshal(o.Stdout, &got)
	json.Unmarshal([]byte(prev), &want)
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("prevResult changed:\n got %s\nwant %s", g, w)
	}
	if s := nat(t, node); strings.Contains(s, "CNI") {
		t.Fatalf("rules made without mappings:\n%s", s)
	}
}

func TestDelIdempotentWithoutNetns(t *testing.T) {
	node := testenv.NewNode(t)
	conf := pmConf("pmnet", "", stdMappings, prevResult("10.66.0.5/24", "fd66::5/64"))
	testenv.Run(t, pmCall(ours(t), node, "ADD", "c", conf)).MustSucceed(t)
	for i := 0; i < 2; i++ {
		c := pmCall(ours(t), node, "DEL", "c", pmConf("pmnet", "", stdMappings, ""))
		c.Netns = ""
		testenv.Run(t, c).MustSucceed(t)
		noCNI(t, node)
	}
}

func TestCheckNamesWhatIsMissing(t *testing.T) {
	node := testenv.NewNode(t)
	conf := pmConf("pmnet", "", stdMappings, prevResult("10.66.0.5/24", "fd66::5/64"))
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c", conf)).MustFail(t, 999).ErrContains(t, "not found")
	testenv.Run(t, pmCall(ours(t), node, "ADD", "c", conf)).MustSucceed(t)
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c", conf)).MustSucceed(t)
	chain := netfilter.DNATChain("pmnet", "c")
	node.MustExec(t, "ip6tables", "-t", "nat", "-D", chain, "-p", "udp", "-m", "udp", "--dport", "5353", "-j", "DNAT", "--to-destination", "[fd66::5]:53")
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c", conf)).MustFail(t, 999).ErrContains(t, "IPv6", chain, "[fd66::5]:53")
	// ADD repairs it (the container chain is rewritten in one transaction).
	testenv.Run(t, pmCall(ours(t), node, "ADD", "c", conf)).MustSucceed(t)
	testenv.Run(t, pmCall(ours(t), node, "CHECK", "c", conf)).MustSucceed(t)
}

// TestReAddWithOtherMappings: an ADD for a container whose chain exists with other mappings
// leaves exactly what a fresh ADD of the new mappings makes.
func TestReAddWithOtherMappings(t *testing.T) {
	a, b := testenv.NewNode(t), testenv.NewNode(t)
	prev := prevResult("10.66.0.5/24", "fd66::5/64")
	testenv.Run(t, pmCall(ours(t), a, "ADD", "c", pmConf("pmnet", "", stdMappings, prev))).MustSucceed(t)
	newMaps := `[{"hostPort":8443,"containerPort":443,"protocol":"tcp"}]`
	testenv.Run(t, pmCall(ours(t), a, "ADD", "c", pmConf("pmnet", "", newMaps, prev))).MustSucceed(t)
	testenv.Run(t, pmCall(ours(t), b, "ADD", "c", pmConf("pmnet", "", newMaps, prev))).MustSucceed(t)
	if x, y := nat(t, a), nat(t, b); x != y {
		t.Fatalf("re-ADD:\n%s\nfresh ADD:\n%s", x, y)
	}
}

func TestGC(t *testing.T) {
	node := testenv.NewNode(t)
	prev := prevResult("10.66.0.5/24", "fd66::5/64")
	for _, c := range []struct{ net, cid string }{{"pmnet", "keep"}, {"pmnet", "gone1"}, {"pmnet", "gone2"}, {"other", "gone1"}} {
		testenv.Run(t, pmCall(ours(t), node, "ADD", c.cid, pmConf(c.net, "", stdMappings, prev))).MustSucceed(t)
	}
	gc := []byte(`{"cniVersion":"1.1.0","name":"pmnet","type":"portmap","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]}`)
	c := pmCall(ours(t), node, "GC", "", gc)
	c.Unset = []string{"CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS"}
	testenv.Run(t, c).MustSucceed(t)
	s := nat(t, node)
	for _, x := range []struct {
		net, cid string
		want     bool
	}{{"pmnet", "keep", true}, {"pmnet", "gone1", false}, {"pmnet", "gone2", false}, {"other", "gone1", true}} {
		if strings.Contains(s, netfilter.DNATChain(x.net, x.cid)) != x.want {
			t.Errorf("after GC: %s/%s present=%v, want %v", x.net, x.cid, !x.want, x.want)
		}
	}
	if t.Failed() {
		t.Log(s)
	}
}

// TestFailedAddRollsBack: when the IPv6 transaction fails, the IPv4 rules of the same ADD go.
func TestFailedAddRollsBack(t *testing.T) {
	node := testenv.NewNode(t)
	sh := newShim(t, "ip6tables-restore", "ip6tables-save")
	c := pmCall(ours(t), node, "ADD", "c", pmConf("pmnet", "", stdMappings, prevResult("10.66.0.5/24", "fd66::5/64")))
	c.Env = sh.env()
	testenv.Run(t, c).MustFail(t, 999).ErrContains(t, "IPv6", "broken")
	if s := nat(t, node); strings.Contains(s, "CNI-DN-") {
		t.Fatalf("IPv4 rules left after a failed ADD:\n%s", s)
	}
}

func udpFlows(t *testing.T, node *testenv.Node, port uint16) int {
	n := 0
	err := node.Do(func() error {
		for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
			flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
			if err != nil {
				return err
			}
			for _, f := range flows {
				if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.DstPort == port {
					n++
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUDPConntrackFlush: a client that sent to the host port before the mapping existed has a
// conntrack entry that bypasses the DNAT; ADD removes it, so the same socket reaches the pod
// at once. DEL removes the entries to the pod too (as the reference v1.10 does).
func TestUDPConntrackFlush(t *testing.T) {
	l := newLab(t)
	a := l.addPod(t, "pod-a", 20)
	// Another pod's mapping first: a node with NAT rules tracks connections (a fresh netns
	// without any does not).
	b := l.addPod(t, "pod-b", 21)
	testenv.Run(t, pmCall(ours(t), l.node, "ADD", "b", pmConf("pmnet", "", `[{"hostPort":7777,"containerPort":53,"protocol":"udp"}]`, b.prev(true, false)))).MustSucceed(t)
	client := udpConn(t, l.node.NS, false)
	if got, err := udpAsk(client, hostV4+":5353"); err == nil {
		t.Fatalf("answer before any mapping: %q", got)
	}
	if udpFlows(t, l.node, 5353) == 0 {
		t.Fatal("the unanswered datagram left no conntrack entry: the test would prove nothing")
	}
	mappings := `[{"hostPort":5353,"containerPort":53,"protocol":"udp"}]`
	testenv.Run(t, pmCall(ours(t), l.node, "ADD", "c", pmConf("pmnet", "", mappings, a.prev(true, true)))).MustSucceed(t)
	got, err := udpAsk(client, hostV4+":5353")
	expectPod(t, "same UDP socket right after ADD", got, err, a, "")
	if udpFlows(t, l.node, 5353) == 0 {
		t.Fatal("no conntrack entry for the mapped flow")
	}
	testenv.Run(t, pmCall(ours(t), l.node, "DEL", "c", pmConf("pmnet", "", mappings, ""))).MustSucceed(t)
	if n := udpFlows(t, l.node, 5353); n != 0 {
		t.Fatalf("%d UDP conntrack entries for the host port left after DEL", n)
	}
}

// TestConcurrentAdds: ADDs racing on a fresh node (all of them making the shared chains) all
// succeed, and the shared rules exist once.
func TestConcurrentAdds(t *testing.T) {
	node := testenv.NewNode(t)
	const n = 8
	errs := make(chan string, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			c := pmCall(ours(t), node, "ADD", fmt.Sprintf("race-%d", i),
				pmConf("pmnet", "", fmt.Sprintf(`[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}]`, 8000+i), prevResult(fmt.Sprintf("10.66.0.%d/24", 10+i), fmt.Sprintf("fd66::%d/64", 10+i))))
			if o := testenv.Run(t, c); o.ExitCode != 0 {
				errs <- o.String()
				return
			}
			errs <- ""
		}(i)
	}
	for i := 0; i < n; i++ {
		if e := <-errs; e != "" {
			t.Errorf("concurrent ADD failed: %s", e)
		}
	}
	s := nat(t, node)
	for _, want := range []struct {
		frag  string
		count int
	}{
		{":CNI-DN-", 2 * n},
		{"-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT", 2},
		{"-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT", 2},
		{"-j CNI-HOSTPORT-MASQ", 2},
		{"-j MARK --set-xmark", 2},
		{"-j MASQUERADE", 2},
	} {
		if got := strings.Count(s, want.frag); got != want.count {
			t.Errorf("%q appears %d times, want %d", want.frag, got, want.count)
		}
	}
	if t.Failed() {
		t.Log(s)
	}
}

// TestNodeWithoutIP6tables: on a node without ip6tables, DEL without prevResult (both
// families unknown) still succeeds and cleans IPv4.
func TestNodeWithoutIP6tables(t *testing.T) {
	node := testenv.NewNode(t)
	dir := t.TempDir()
	for _, p := range []string{"iptables-save", "iptables-restore"} {
		real, err := execLookPath(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(real, filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"PATH=" + dir}
	c := pmCall(ours(t), node, "ADD", "c", pmConf("pmnet", "", stdMappings, prevResult("10.66.0.5/24")))
	c.Env = env
	testenv.Run(t, c).MustSucceed(t)
	c = pmCall(ours(t), node, "DEL", "c", pmConf("pmnet", "", stdMappings, ""))
	c.Env = env
	testenv.Run(t, c).MustSucceed(t)
	noCNI(t, node)
	c = pmCall(ours(t), node, "STATUS", "", []byte(`{"cniVersion":"1.1.0","name":"pmnet","type":"portmap"}`))
	c.Env = env
	testenv.Run(t, c).MustFail(t, 50).ErrContains(t, "ip6tables")
}

func TestStatus(t *testing.T) {
	node := testenv.NewNode(t)
	c := pmCall(ours(t), node, "STATUS", "", []byte(`{"cniVersion":"1.1.0","name":"pmnet","type":"portmap"}`))
	testenv.Run(t, c).MustSucceed(t)
	c.Config = []byte(`{"cniVersion":"1.1.0","name":"pmnet","type":"portmap","markMasqBit":99}`)
	testenv.Run(t, c).MustFail(t, 50).ErrContains(t, "markMasqBit")
}

// TestAddRepairsMissingSharedChain: with CNI-HOSTPORT-MASQ gone (and its POSTROUTING jump),
// the next ADD's optimistic transaction fails as a whole and the ADD makes it again.
func TestAddRepairsMissingSharedChain(t *testing.T) {
	node := testenv.NewNode(t)
	prev := prevResult("10.66.0.5/24")
	testenv.Run(t, pmCall(ours(t), node, "ADD", "a", pmConf("pmnet", "", stdMappings, prev))).MustSucceed(t)
	want := nat(t, node)
	for _, c := range [][]string{{"-D", "POSTROUTING", "1"}, {"-F", "CNI-HOSTPORT-MASQ"}, {"-X", "CNI-HOSTPORT-MASQ"}} {
		node.MustExec(t, "iptables", append([]string{"-t", "nat"}, c...)...)
	}
	testenv.Run(t, pmCall(ours(t), node, "ADD", "b", pmConf("pmnet", "", stdMappings, prevResult("10.66.0.6/24")))).MustSucceed(t)
	testenv.Run(t, pmCall(ours(t), node, "DEL", "b", pmConf("pmnet", "", stdMappings, ""))).MustSucceed(t)
	if got := nat(t, node); got != want {
		t.Fatalf("shared chain not repaired:\n%s\nwant:\n%s", got, want)
	}
}
