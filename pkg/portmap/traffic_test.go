package portmap_test

import (
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// TestTraffic runs real TCP (HTTP) and UDP through the host ports of two dual-stack pods: from
// the node to its own addresses, from 127.0.0.1, from another pod, from the pod itself
// (hairpin), over IPv6, with hostIP limiting a mapping to one address; then DEL closes the
// ports and leaves no trace of the container, while the other pod keeps working. Once per
// backend, ours and the reference's.
func TestTraffic(t *testing.T) {
	for _, backend := range []string{"iptables", "nftables"} {
		for _, impl := range []struct{ name, dir string }{
			{"ours", testenv.PluginDir(t)},
			{"reference", testenv.RefPluginDir(t, testenv.RefVersion)},
		} {
			t.Run(backend+"/"+impl.name, func(t *testing.T) { traffic(t, impl.dir, backend) })
		}
	}
}

func traffic(t *testing.T, dir, backend string) {
	l := newLab(t)
	a, b := l.addPod(t, "pod-a", 10), l.addPod(t, "pod-b", 11)
	mapA := `[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"},
		{"hostPort":9090,"containerPort":80,"protocol":"tcp","hostIP":"` + hostV4 + `"}]`
	mapB := `[{"hostPort":8081,"containerPort":80,"protocol":"tcp"},{"hostPort":5354,"containerPort":53,"protocol":"udp"}]`
	extra := `"backend":"` + backend + `"`
	confA := pmConf("pmnet", extra, mapA, a.prev(true, true))
	confB := pmConf("pmnet", extra, mapB, b.prev(true, true))
	testenv.Run(t, pmCall(dir, l.node, "ADD", "ctr-a", confA)).MustSucceed(t)
	testenv.Run(t, pmCall(dir, l.node, "ADD", "ctr-b", confB)).MustSucceed(t)
	if got := strings.TrimSpace(l.node.MustExec(t, "cat", "/proc/sys/net/ipv4/conf/cnip0/route_localnet")); got != "1" {
		t.Errorf("route_localnet on the bridge = %s, want 1", got)
	}

	node := l.node.NS
	s, err := httpGet(node, hostV4+":8080")
	expectPod(t, "node -> host IP:8080", s, err, a, "")
	s, err = httpGet(node, brV4+":8080")
	expectPod(t, "node -> bridge IP:8080", s, err, a, "")
	s, err = httpGet(node, "127.0.0.1:8080")
	expectPod(t, "node -> 127.0.0.1:8080", s, err, a, brV4) // masqueraded to the bridge address
	s, err = httpGet(b.ns, hostV4+":8080")
	expectPod(t, "pod-b -> host IP:8080", s, err, a, "")
	s, err = httpGet(a.ns, hostV4+":8080")
	expectPod(t, "pod-a -> host IP:8080 (hairpin)", s, err, a, brV4)
	s, err = httpGet(node, hostV4+":8081")
	expectPod(t, "node -> host IP:8081", s, err, b, "")
	s, err = httpGet(node, "["+hostV6+"]:8080")
	expectPod(t, "node -> [host IPv6]:8080", s, err, a, "")
	s, err = httpGet(a.ns, "["+hostV6+"]:8080")
	expectPod(t, "pod-a -> [host IPv6]:8080 (hairpin)", s, err, a, "fd66::1")
	s, err = httpGet(b.ns, "["+hostV6+"]:8081")
	expectPod(t, "pod-b -> [host IPv6]:8081 (hairpin)", s, err, b, "fd66::1")
	s, err = httpGet(node, hostV4+":9090")
	expectPod(t, "node -> hostIP:9090", s, err, a, "")
	s, err = httpGet(node, brV4+":9090")
	expectClosed(t, "node -> bridge IP:9090 (hostIP is the host address only)", s, err)

	s, err = udpOnce(t, node, hostV4+":5353")
	expectPod(t, "udp node -> host IP:5353", s, err, a, "")
	s, err = udpOnce(t, node, "127.0.0.1:5353")
	expectPod(t, "udp node -> 127.0.0.1:5353", s, err, a, brV4)
	s, err = udpOnce(t, b.ns, hostV4+":5353")
	expectPod(t, "udp pod-b -> host IP:5353", s, err, a, "")
	s, err = udpOnce(t, a.ns, hostV4+":5353")
	expectPod(t, "udp pod-a -> host IP:5353 (hairpin)", s, err, a, brV4)
	s, err = udpOnce(t, node, "["+hostV6+"]:5354")
	expectPod(t, "udp node -> [host IPv6]:5354", s, err, b, "")

	// DEL without prevResult (as after a lost result) closes pod-a's ports only.
	testenv.Run(t, pmCall(dir, l.node, "DEL", "ctr-a", pmConf("pmnet", extra, mapA, ""))).MustSucceed(t)
	for _, addr := range []string{hostV4 + ":8080", "127.0.0.1:8080", "[" + hostV6 + "]:8080", hostV4 + ":9090"} {
		s, err = httpGet(node, addr)
		expectClosed(t, "after DEL, node -> "+addr, s, err)
	}
	s, err = udpOnce(t, node, hostV4+":5353")
	expectClosed(t, "after DEL, udp node -> host IP:5353", s, err)
	s, err = httpGet(node, hostV4+":8081")
	expectPod(t, "after DEL of pod-a, node -> host IP:8081", s, err, b, "")
	if tables := nat(t, l.node); strings.Contains(tables, "ctr-a") || backend == "iptables" && strings.Count(tables, ":CNI-DN-") != 2 {
		t.Errorf("after DEL, pod-a's rules remain:\n%s", tables)
	}
	if rs := nftRuleset(t, l.node); strings.Contains(rs, "ctr-a") || backend == "nftables" && !strings.Contains(rs, `comment "ctr-b"`) {
		t.Errorf("after DEL of pod-a, want only pod-b's rules:\n%s", rs)
	}
	testenv.Run(t, pmCall(dir, l.node, "DEL", "ctr-b", confB)).MustSucceed(t)
	noCNI(t, l.node)
	if rs := nftRuleset(t, l.node); strings.Contains(rs, "ctr-") {
		t.Errorf("after DEL, rules remain:\n%s", rs)
	}
}
