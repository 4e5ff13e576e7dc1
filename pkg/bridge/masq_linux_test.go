package bridge_test

import (
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// upstream makes a third netns routed behind the node (10.200.0.0/24, fd00:200::/64) that has
// no route back to the pods: a pod reaches it only when masqueraded behind the node's address.
func upstream(t *testing.T, e *env) *testenv.NS {
	t.Helper()
	up := testenv.NewNS(t, "up")
	e.node.MustExec(t, "ip", "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", up.Name)
	e.node.MustExec(t, "ip", "addr", "add", "10.200.0.1/24", "dev", "uplink")
	e.node.MustExec(t, "ip", "addr", "add", "fd00:200::1/64", "dev", "uplink", "nodad")
	e.node.MustExec(t, "ip", "link", "set", "uplink", "up")
	up.MustExec(t, "ip", "addr", "add", "10.200.0.2/24", "dev", "eth0")
	up.MustExec(t, "ip", "addr", "add", "fd00:200::2/64", "dev", "eth0", "nodad")
	up.MustExec(t, "ip", "link", "set", "eth0", "up")
	// Count what arrives, by source.
	for _, c := range [][]string{
		{"iptables", "-A", "INPUT", "-p", "icmp", "-s", "10.200.0.1"},
		{"iptables", "-A", "INPUT", "-p", "icmp", "-s", "10.22.0.0/24"},
		{"ip6tables", "-A", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type", "echo-request", "-s", "fd00:200::1"},
	} {
		up.MustExec(t, c[0], c[1:]...)
	}
	return up
}

// arrivals is the packet count of upstream's INPUT rule matching source src.
func arrivals(t *testing.T, up *testenv.NS, prog, src string) string {
	t.Helper()
	for _, l := range strings.Split(up.MustExec(t, prog, "-L", "INPUT", "-n", "-v", "-x"), "\n") {
		f := strings.Fields(l)
		if len(f) > 7 && (f[7] == src || (len(f) > 6 && f[6] == src)) {
			return f[0]
		}
	}
	t.Fatalf("no INPUT rule for %s in upstream", src)
	return ""
}

func TestIPMasqTrafficLeavesWithNodeAddress(t *testing.T) {
	e := newEnv(t)
	up := upstream(t, e)
	conf := e.conf(map[string]any{"ipMasq": true, "isDefaultGateway": true, "ipam": e.ipam("10.22.0.0/24", "fd00:22::/64")})
	p := e.node.NewPod(t)
	e.add(p, "c1", conf)
	ping(t, p, "10.200.0.2")
	ping(t, p, "fd00:200::2")
	if n := arrivals(t, up, "iptables", "10.200.0.1"); n == "0" {
		t.Fatal("no IPv4 packet arrived upstream from the node's address")
	}
	if n := arrivals(t, up, "iptables", "10.22.0.0/24"); n != "0" {
		t.Fatalf("%s IPv4 packets arrived upstream from the pod's own address", n)
	}
	if n := arrivals(t, up, "ip6tables", "fd00:200::1"); n == "0" {
		t.Fatal("no IPv6 packet arrived upstream from the node's address")
	}
	// Pod to pod on the bridge is not masqueraded: the chain accepts the pod subnet first.
	if out := e.node.MustExec(t, "iptables", "-t", "nat", "-S"); !strings.Contains(out, "-d 10.22.0.0/24") {
		t.Fatalf("no accept of the pod subnet in the masquerade chain:\n%s", out)
	}
	e.call("DEL", p, "c1", "eth0", conf).MustSucceed(t)
	e.nothingLeft()
	if out := e.node.MustExec(t, "ip6tables-save", "-t", "nat"); strings.Contains(out, "CNI-") {
		t.Fatalf("IPv6 masquerade rules left:\n%s", out)
	}
}

func TestWithoutIPMasqUpstreamIsUnreachable(t *testing.T) {
	e := newEnv(t)
	upstream(t, e)
	p := e.node.NewPod(t)
	e.add(p, "c1", e.conf(map[string]any{"isDefaultGateway": true}))
	noPing(t, p, "10.200.0.2") // upstream has no route back to the pod
}

// masqConf pins the pod's addresses (host-local runtimeConfig.ips) so that ours and the
// reference produce rules for the same addresses.
func masqConf(e *env) []byte {
	return e.conf(map[string]any{"ipMasq": true, "ipam": e.ipam("10.22.0.0/24", "fd00:22::/64"),
		"runtimeConfig": map[string]any{"ips": []string{"10.22.0.5/24", "fd00:22::5/64"}}})
}

func TestIPMasqRulesMatchReference(t *testing.T) {
	e := newEnv(t)
	conf := masqConf(e)
	p := e.node.NewPod(t)
	e.ref().add(p, "c1", conf)
	want4, want6 := natSave(t, e.node.NS, "iptables-save"), natSave(t, e.node.NS, "ip6tables-save")
	if !strings.Contains(want4, "CNI-") || !strings.Contains(want6, "CNI-") {
		t.Fatalf("reference made no masquerade rules:\n%s\n%s", want4, want6)
	}
	e.ref().call("DEL", p, "c1", "eth0", conf).MustSucceed(t)
	e.nothingLeft()
	e.add(p, "c1", conf)
	if got := natSave(t, e.node.NS, "iptables-save"); got != want4 {
		t.Errorf("iptables-save differs:\nours:\n%s\nreference:\n%s", got, want4)
	}
	if got := natSave(t, e.node.NS, "ip6tables-save"); got != want6 {
		t.Errorf("ip6tables-save differs:\nours:\n%s\nreference:\n%s", got, want6)
	}
}

func TestIPMasqDelByEitherCleansTheOther(t *testing.T) {
	e := newEnv(t)
	conf := masqConf(e)
	cases := []struct {
		name     string
		add, del *env
	}{{"ours-then-reference", e, e.ref()}, {"reference-then-ours", e.ref(), e}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := e.node.NewPod(t)
			c.add.add(p, "x1", conf)
			c.del.call("DEL", p, "x1", "eth0", conf).MustSucceed(t)
			e.nothingLeft()
			if out := e.node.MustExec(t, "ip6tables-save", "-t", "nat"); strings.Contains(out, "CNI-") {
				t.Fatalf("IPv6 rules left:\n%s", out)
			}
		})
	}
}

// With the netns gone and no prevResult, the reference's DEL cannot find the IPs and leaves
// its rules; ours finds them by the rules' comments, whoever made them.
func TestIPMasqDelWithoutNetnsOrPrevResult(t *testing.T) {
	e := newEnv(t)
	conf := masqConf(e)
	for _, maker := range []*env{e.ref(), e} {
		p := e.node.NewPod(t)
		maker.add(p, "gone1", conf)
		p.Delete(t)
		e.call("DEL", p, "gone1", "eth0", conf).MustSucceed(t)
		e.nothingLeft()
		if out := e.node.MustExec(t, "ip6tables-save", "-t", "nat"); strings.Contains(out, "CNI-") {
			t.Fatalf("IPv6 rules left:\n%s", out)
		}
	}
}

func TestIPMasqCheckAndGC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"cniVersion": "1.1.0", "ipMasq": true})
	p1, p2 := e.node.NewPod(t), e.node.NewPod(t)
	r1 := e.add(p1, "keep", conf)
	e.add(p2, "drop", conf)
	withP := withPrev(t, conf, r1)
	e.call("CHECK", p1, "keep", "eth0", withP).MustSucceed(t)

	e.call("GC", nil, "", "", withKey(t, conf, "cni.dev/valid-attachments", []map[string]string{{"containerID": "keep", "ifname": "eth0"}})).MustSucceed(t)
	out := e.node.MustExec(t, "iptables-save", "-t", "nat")
	if !strings.Contains(out, `id: \"keep\"`) || strings.Contains(out, `id: \"drop\"`) {
		t.Fatalf("GC kept the wrong rules:\n%s", out)
	}
	e.call("CHECK", p1, "keep", "eth0", withP).MustSucceed(t)
	// Remove the container's POSTROUTING jump: CHECK names what is missing.
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "-A POSTROUTING") && strings.Contains(l, `id: \"keep\"`) {
			args := strings.Fields(strings.Replace(l, "-A", "-D", 1))
			e.node.MustExec(t, "sh", "-c", "iptables -t nat "+strings.Join(args, " "))
		}
	}
	e.call("CHECK", p1, "keep", "eth0", withP).MustFail(t, 999).ErrContains(t, "ipMasq", "POSTROUTING")
}
