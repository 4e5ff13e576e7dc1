package bridge_test

import (
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func TestTwoPodsPingEachOtherAndGateway(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"isDefaultGateway": true})
	p1, p2 := e.node.NewPod(t), e.node.NewPod(t)
	r1, r2 := e.add(p1, "c1", conf), e.add(p2, "c2", conf)

	// Result layout: bridge, host veth, container interface in its sandbox; IPs on index 2.
	if len(r1.Interfaces) != 3 || r1.Interfaces[0].Name != "cni0" || !strings.HasPrefix(r1.Interfaces[1].Name, "veth") ||
		r1.Interfaces[2].Name != "eth0" || r1.Interfaces[2].Sandbox != p1.Path || r1.Interfaces[1].Sandbox != "" {
		t.Fatalf("interfaces = %+v", r1.Interfaces)
	}
	if len(r1.IPs) != 1 || *r1.IPs[0].Interface != 2 || r1.IPs[0].Gateway.String() != "10.22.0.1" {
		t.Fatalf("ips = %+v", r1.IPs)
	}
	if len(r1.Routes) != 1 || r1.Routes[0].Dst.String() != "0.0.0.0/0" || r1.Routes[0].GW.String() != "10.22.0.1" {
		t.Fatalf("routes = %+v", r1.Routes)
	}
	// What the result says is what the kernel has.
	if out := e.node.MustExec(t, "ip", "-o", "link", "show", r1.Interfaces[1].Name); !strings.Contains(out, "master cni0") ||
		!strings.Contains(out, r1.Interfaces[1].Mac) {
		t.Fatalf("host veth: %s", out)
	}
	if out := e.node.MustExec(t, "ip", "-o", "link", "show", "cni0"); !strings.Contains(out, r2.Interfaces[0].Mac) {
		t.Fatalf("bridge MAC %s not in %s", r2.Interfaces[0].Mac, out)
	}
	if out := p1.MustExec(t, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, r1.Interfaces[2].Mac) {
		t.Fatalf("container MAC %s not in %s", r1.Interfaces[2].Mac, out)
	}
	if out := p1.MustExec(t, "ip", "route"); !strings.Contains(out, "default via 10.22.0.1 dev eth0") {
		t.Fatalf("pod routes: %s", out)
	}
	ping(t, p1, ipOf(r2, true))
	ping(t, p2, ipOf(r1, true))
	ping(t, p1, "10.22.0.1")
	if out := e.node.MustExec(t, "sysctl", "-n", "net.ipv4.ip_forward"); strings.TrimSpace(out) != "1" {
		t.Fatalf("ip_forward = %s", out)
	}
}

func TestDualStackPodsPingOverBothFamilies(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"isDefaultGateway": true, "ipam": e.ipam("10.22.0.0/24", "fd00:22::/64")})
	p1, p2 := e.node.NewPod(t), e.node.NewPod(t)
	r1, r2 := e.add(p1, "c1", conf), e.add(p2, "c2", conf)
	if len(r1.IPs) != 2 || len(r1.Routes) != 2 {
		t.Fatalf("want an IP and a default route per family: %+v %+v", r1.IPs, r1.Routes)
	}
	// No DAD (enabledad unset): the addresses are usable at once.
	if out := p1.MustExec(t, "ip", "-6", "addr", "show", "dev", "eth0"); strings.Contains(out, "tentative") {
		t.Fatalf("tentative address without enabledad: %s", out)
	}
	for _, v4 := range []bool{true, false} {
		ping(t, p1, ipOf(r2, v4))
		ping(t, p2, ipOf(r1, v4))
	}
	ping(t, p1, "10.22.0.1")
	ping(t, p1, "fd00:22::1")
	if out := p1.MustExec(t, "ip", "-6", "route"); !strings.Contains(out, "default via fd00:22::1 dev eth0") {
		t.Fatalf("pod IPv6 routes: %s", out)
	}
	if out := e.node.MustExec(t, "sysctl", "-n", "net.ipv6.conf.all.forwarding"); strings.TrimSpace(out) != "1" {
		t.Fatalf("IPv6 forwarding = %s", out)
	}
}

func TestEnableDADWaitsForNonTentativeAddresses(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"enabledad": true, "ipam": e.ipam("fd00:23::/64")})
	p := e.node.NewPod(t)
	e.add(p, "c1", conf)
	if v := strings.TrimSpace(p.MustExec(t, "sysctl", "-n", "net.ipv6.conf.eth0.accept_dad")); v != "1" {
		t.Fatalf("accept_dad = %s with enabledad", v)
	}
	if out := p.MustExec(t, "ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"); !strings.Contains(out, "fd00:23::") ||
		strings.Contains(out, "tentative") {
		t.Fatalf("ADD returned before DAD finished: %s", out)
	}
}

func TestMTUReachesBothEnds(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"mtu": 1400})
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	for _, c := range []struct {
		ns   *testenv.NS
		name string
	}{{e.node.NS, "cni0"}, {e.node.NS, r.Interfaces[1].Name}, {p, "eth0"}} {
		if out := c.ns.MustExec(t, "ip", "-o", "link", "show", c.name); !strings.Contains(out, "mtu 1400 ") {
			t.Errorf("%s: want mtu 1400: %s", c.name, out)
		}
	}
	if out := p.MustExec(t, "ping", "-c1", "-W2", "-M", "do", "-s", "1372", "10.22.0.1"); !strings.Contains(out, "1 received") {
		t.Fatalf("full-size packet at mtu 1400: %s", out)
	}
}

// vlanFiltering reports whether the kernel has bridge VLAN filtering; without it, it checks
// that a VLAN config fails with an error that says so.
func vlanFiltering(t *testing.T, e *env, conf []byte) bool {
	t.Helper()
	if _, err := e.node.Exec("ip", "link", "add", "cnis-vf", "type", "bridge", "vlan_filtering", "1"); err == nil {
		e.node.MustExec(t, "ip", "link", "del", "cnis-vf")
		return true
	}
	e.call("ADD", e.node.NewPod(t), "novf", "eth0", conf).MustFail(t, 999).ErrContains(t, "VLAN filtering", "vlan/vlanTrunk", "kernel")
	e.nothingLeft()
	t.Log("this kernel lacks bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): checked the error instead of traffic")
	return false
}

func TestVlanIsolatesPods(t *testing.T) {
	e := newEnv(t)
	if !vlanFiltering(t, e, e.conf(map[string]any{"isGateway": false, "vlan": 10})) {
		return
	}
	// Same subnet, no gateway: only layer 2 decides who reaches whom.
	mk := func(vlan int) []byte { return e.conf(map[string]any{"isGateway": false, "vlan": vlan}) }
	a10, b10, c20 := e.node.NewPod(t), e.node.NewPod(t), e.node.NewPod(t)
	ra, rb, rc := e.add(a10, "a", mk(10)), e.add(b10, "b", mk(10)), e.add(c20, "c", mk(20))
	ping(t, a10, ipOf(rb, true))
	noPing(t, a10, ipOf(rc, true))
	noPing(t, c20, ipOf(ra, true))
	out := e.node.MustExec(t, "bridge", "vlan", "show", "dev", rc.Interfaces[1].Name)
	if !strings.Contains(out, "20 PVID") || strings.Contains(out, " 1 PVID") {
		t.Fatalf("port vlans of pod c: %s", out)
	}
	if out := e.node.MustExec(t, "ip", "-d", "link", "show", "cni0"); !strings.Contains(out, "vlan_filtering 1") {
		t.Fatalf("bridge without vlan filtering: %s", out)
	}
}

func TestVlanGatewayInterface(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"vlan": 30, "isDefaultGateway": true})
	if !vlanFiltering(t, e, conf) {
		return
	}
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	if len(r.Interfaces) != 4 || r.Interfaces[3].Name != "cni0.30" {
		t.Fatalf("want the vlan gateway interface cni0.30 in the result: %+v", r.Interfaces)
	}
	if out := e.node.MustExec(t, "ip", "-o", "addr", "show", "dev", "cni0.30"); !strings.Contains(out, "10.22.0.1/24") {
		t.Fatalf("gateway address not on cni0.30: %s", out)
	}
	ping(t, p, "10.22.0.1")
	// A second pod reuses the gateway interface.
	p2 := e.node.NewPod(t)
	e.add(p2, "c2", conf)
	ping(t, p2, "10.22.0.1")
}

func TestTrunkVlans(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"isGateway": false, "vlanTrunk": []map[string]int{{"minID": 100, "maxID": 103}, {"id": 200}}})
	if !vlanFiltering(t, e, conf) {
		return
	}
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	out := e.node.MustExec(t, "bridge", "-j", "vlan", "show", "dev", r.Interfaces[1].Name)
	for _, want := range []string{`"vlan":1,"flags":["PVID","Egress Untagged"]`, `"vlan":100}`, `"vlan":103}`, `"vlan":200}`} {
		if !strings.Contains(strings.ReplaceAll(out, " ", ""), want) {
			t.Errorf("trunk port vlans lack %s: %s", want, out)
		}
	}
}

func TestHairpinAndPortIsolation(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"hairpinMode": true, "portIsolation": true})
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	out := e.node.MustExec(t, "ip", "-d", "link", "show", r.Interfaces[1].Name)
	if !strings.Contains(out, "hairpin on") || !strings.Contains(out, "isolated on") {
		t.Fatalf("port flags: %s", out)
	}
	p2 := e.node.NewPod(t)
	r2 := e.add(p2, "c2", conf)
	noPing(t, p, ipOf(r2, true)) // isolated ports do not talk to each other
	ping(t, p, "10.22.0.1")      // but reach the bridge
}

func TestPromiscMode(t *testing.T) {
	e := newEnv(t)
	e.add(e.node.NewPod(t), "c1", e.conf(map[string]any{"promiscMode": true}))
	if out := e.node.MustExec(t, "ip", "-d", "link", "show", "cni0"); !strings.Contains(out, "promiscuity 1") {
		t.Fatalf("bridge not promiscuous: %s", out)
	}
}

func TestContainerMACFromEveryKey(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		name, args string
		kv         map[string]any
		want       string
	}{
		{"CNI_ARGS", "IgnoreUnknown=1;MAC=02:00:00:00:10:01", nil, "02:00:00:00:10:01"},
		{"args.cni.mac", "IgnoreUnknown=1;MAC=02:00:00:00:10:01", map[string]any{"args": map[string]any{"cni": map[string]string{"mac": "02:00:00:00:10:02"}}}, "02:00:00:00:10:02"},
		{"runtimeConfig.mac", "", map[string]any{"args": map[string]any{"cni": map[string]string{"mac": "02:00:00:00:10:02"}},
			"runtimeConfig": map[string]string{"mac": "02:00:00:00:10:03"}}, "02:00:00:00:10:03"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := e.node.NewPod(t)
			call := testenv.Call{Bin: e.bin, Command: "ADD", ContainerID: "mac-" + strings.ReplaceAll(c.name, "_", ""), IfName: "eth0",
				Netns: p.Path, Path: e.path, Config: e.conf(c.kv), In: e.node.NS, Args: c.args}
			r := testenv.Run(t, call).MustSucceed(t).Result(t, "1.0.0")
			if r.Interfaces[2].Mac != c.want {
				t.Fatalf("result MAC %s, want %s", r.Interfaces[2].Mac, c.want)
			}
			if out := p.MustExec(t, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, c.want) {
				t.Fatalf("eth0: %s", out)
			}
		})
	}
}

func TestLayer2Only(t *testing.T) {
	e := newEnv(t)
	p := e.node.NewPod(t)
	r := e.add(p, "c1", e.conf(map[string]any{"ipam": nil, "isGateway": false}))
	if len(r.IPs) != 0 || len(r.Interfaces) != 3 {
		t.Fatalf("layer-2 result: %+v", r)
	}
	if out := p.MustExec(t, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, ",UP") {
		t.Fatalf("eth0 not up: %s", out)
	}
	p2 := e.node.NewPod(t)
	e.add(p2, "c2", e.conf(map[string]any{"ipam": nil, "isGateway": false, "disableContainerInterface": true}))
	if out := p2.MustExec(t, "ip", "-o", "link", "show", "eth0"); strings.Contains(out, ",UP") {
		t.Fatalf("eth0 up with disableContainerInterface: %s", out)
	}
}

// routes keeps the IPAM routes and fills their gateway in.
func TestIPAMRoutesAndDNS(t *testing.T) {
	e := newEnv(t)
	ipam := e.ipam("10.22.0.0/24")
	ipam["routes"] = []map[string]string{{"dst": "10.50.0.0/16"}, {"dst": "10.60.0.0/16", "gw": "10.22.0.9"}}
	conf := e.conf(map[string]any{"ipam": ipam, "dns": map[string]any{"nameservers": []string{"10.22.0.53"}}})
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	out := p.MustExec(t, "ip", "route")
	for _, want := range []string{"10.50.0.0/16 via 10.22.0.1", "10.60.0.0/16 via 10.22.0.9"} {
		if !strings.Contains(out, want) {
			t.Errorf("pod routes lack %q: %s", want, out)
		}
	}
	if len(r.DNS.Nameservers) != 1 || r.DNS.Nameservers[0] != "10.22.0.53" {
		t.Errorf("dns = %+v", r.DNS)
	}
}

var _ = current.Int

// Two IPv4 ranges: the bridge carries both gateways (the reference refuses the second one as a
// conflicting address) and the pod reaches both.
func TestTwoIPv4RangesTwoGateways(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"ipam": e.ipam("10.22.0.0/24", "10.23.0.0/24")})
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	if len(r.IPs) != 2 {
		t.Fatalf("ips %+v", r.IPs)
	}
	out := e.node.MustExec(t, "ip", "-o", "addr", "show", "dev", "cni0")
	for _, gw := range []string{"10.22.0.1/24", "10.23.0.1/24"} {
		if !strings.Contains(out, gw) {
			t.Errorf("bridge lacks %s: %s", gw, out)
		}
	}
	ping(t, p, "10.22.0.1")
	ping(t, p, "10.23.0.1")
	e.ref().call("ADD", e.node.NewPod(t), "c2", "eth0", conf).MustFail(t, 999).ErrContains(t, "already has an IP address")
}
