package bridge_test

import (
	"strings"
	"testing"
)

// An IPv4-only network makes its node-side interfaces (the bridge when it creates it, every
// host veth) without IPv6, so a new port sends no link-local DAD, MLD or router solicitation
// that the bridge would flood to every other port. A network with IPv6 ranges, or without
// IPAM (layer 2 only: the pods may use IPv6 link-local), keeps IPv6 on them. The pod's own
// interface keeps its link-local address as with the reference, but sends no router
// solicitation on an IPv4-only network.
func TestIPv6OnNodeInterfaces(t *testing.T) {
	cases := []struct {
		name       string
		kv         map[string]any
		v6Off      bool
		podLLAddr  bool // the pod's eth0 has an fe80:: address
		bridgeName string
	}{
		{"ipv4-only", nil, true, true, "cni0"},
		{"dual-stack", map[string]any{"ipam": ranges("10.22.0.0/24", "fd00:22::/64")}, false, true, "cni0"},
		{"ipv6-only", map[string]any{"ipam": ranges("fd00:23::/64")}, false, true, "cni0"},
		{"layer2-only", map[string]any{"ipam": nil, "isGateway": false}, false, true, "cni0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			kv := map[string]any{}
			for k, v := range c.kv {
				kv[k] = v
			}
			if ip, ok := kv["ipam"].(map[string]any); ok {
				ip["dataDir"] = e.node.DataDir
			}
			conf := e.conf(kv)
			p := e.node.NewPod(t)
			e.call("ADD", p, "c1", "eth0", conf).MustSucceed(t)
			want := "0"
			if c.v6Off {
				want = "1"
			}
			veths := vethsOf(t, e.node.NS)
			if len(veths) != 1 {
				t.Fatalf("node veths: %v", veths)
			}
			for _, l := range []string{c.bridgeName, veths[0]} {
				got := strings.TrimSpace(e.node.MustExec(t, "cat", "/proc/sys/net/ipv6/conf/"+l+"/disable_ipv6"))
				if got != want {
					t.Errorf("%s: disable_ipv6 = %s, want %s", l, got, want)
				}
				out := e.node.MustExec(t, "ip", "-6", "-o", "addr", "show", "dev", l, "scope", "link")
				if c.v6Off && strings.Contains(out, "fe80:") {
					t.Errorf("%s has an IPv6 link-local address on an IPv4-only network: %s", l, out)
				}
			}
			if c.v6Off {
				// Still up and forwarding IPv4.
				ping(t, p, "10.22.0.1")
			}
			// The pod solicits no router on an IPv4-only network (its gateway sends no
			// advertisement; each solicitation would be flooded to every port).
			rs := strings.TrimSpace(p.MustExec(t, "cat", "/proc/sys/net/ipv6/conf/eth0/router_solicitations"))
			if (rs == "0") != c.v6Off {
				t.Errorf("pod eth0 router_solicitations = %s on %s", rs, c.name)
			}
			out := p.MustExec(t, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link")
			if got := strings.Contains(out, "fe80:"); got != c.podLLAddr {
				t.Errorf("pod eth0 link-local address present = %v, want %v: %s", got, c.podLLAddr, out)
			}
			e.call("DEL", p, "c1", "eth0", conf).MustSucceed(t)
		})
	}
}

// A bridge made IPv6-less by an IPv4-only network gets IPv6 back when a network with IPv6
// gateways uses it.
func TestIPv6BackOnSharedBridge(t *testing.T) {
	e := newEnv(t)
	p1, p2 := e.node.NewPod(t), e.node.NewPod(t)
	e.add(p1, "c1", e.conf(nil))
	if got := strings.TrimSpace(e.node.MustExec(t, "cat", "/proc/sys/net/ipv6/conf/cni0/disable_ipv6")); got != "1" {
		t.Fatalf("cni0 disable_ipv6 = %s after an IPv4-only ADD, want 1", got)
	}
	// Same IPv4 gateway (another address would conflict), disjoint pool.
	conf := e.conf(map[string]any{"name": "brnet6", "ipam": map[string]any{"type": "host-local", "dataDir": e.node.DataDir,
		"ranges": [][]map[string]string{{{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.200"}}, {{"subnet": "fd00:24::/64"}}}}})
	e.add(p2, "c2", conf)
	if got := strings.TrimSpace(e.node.MustExec(t, "cat", "/proc/sys/net/ipv6/conf/cni0/disable_ipv6")); got != "0" {
		t.Fatalf("cni0 disable_ipv6 = %s after a dual-stack ADD, want 0", got)
	}
	ping(t, p2, "fd00:24::1")
	ping(t, p1, "10.22.0.1")
}
