package bridge_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func TestExistingBridgeConflictingAddress(t *testing.T) {
	e := newEnv(t)
	e.node.MustExec(t, "ip", "link", "add", "cni0", "type", "bridge")
	e.node.MustExec(t, "ip", "addr", "add", "10.99.0.1/24", "dev", "cni0")
	p := e.node.NewPod(t)
	conf := e.conf(map[string]any{"macspoofchk": true})
	e.call("ADD", p, "c1", "eth0", conf).MustFail(t, 999).ErrContains(t, `"cni0"`, "10.99.0.1/24", "10.22.0.1/24", "forceAddress")
	// The failed ADD came after the veth, the spoof check and the IPAM reservation: all undone.
	e.nothingLeft()
	if l := links(t, p); len(l) != 1 {
		t.Fatalf("pod links after failed ADD: %v", l)
	}
	e.add(p, "c1", e.conf(map[string]any{"forceAddress": true}))
	out := e.node.MustExec(t, "ip", "-o", "addr", "show", "dev", "cni0")
	if strings.Contains(out, "10.99.0.1") || !strings.Contains(out, "10.22.0.1/24") {
		t.Fatalf("forceAddress did not replace the address: %s", out)
	}
	ping(t, p, "10.22.0.1")
}

func TestExistingNonBridgeLinkIsAnError(t *testing.T) {
	e := newEnv(t)
	e.node.MustExec(t, "ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cnis-other")
	e.call("ADD", e.node.NewPod(t), "c1", "eth0", e.conf(nil)).MustFail(t, 999).ErrContains(t, `"cni0"`, "not a bridge")
	e.nothingLeft()
}

func TestIfNameAlreadyInPod(t *testing.T) {
	e := newEnv(t)
	p := e.node.NewPod(t)
	p.MustExec(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
	e.call("ADD", p, "c1", "eth0", e.conf(nil)).MustFail(t, 999).ErrContains(t, `"eth0"`, "already exists", p.Path)
	e.nothingLeft()
	if l := links(t, p); len(l) != 3 {
		t.Fatalf("pod links after failed ADD: %v", l)
	}
	if out := p.MustExec(t, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "eth0@other0") {
		t.Fatalf("the pod's own eth0 was touched: %s", out)
	}
}

func TestFailedAddLeavesNothing(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name   string
		kv     map[string]any
		args   string
		code   uint
		errHas []string
	}{
		// The IPAM plugin's own error is passed on (ours says 7, the reference's 999).
		{"ipam-failure", map[string]any{"ipam": e.ipam("not-a-cidr")}, "", 0, []string{"not-a-cidr"}},
		{"ipam-missing", map[string]any{"ipam": map[string]any{"type": "no-such-ipam"}}, "", 999, []string{"no-such-ipam"}},
		{"bad-mac", map[string]any{"runtimeConfig": map[string]string{"mac": "01:00:5e:00:00:01"}}, "", 7, []string{"runtimeConfig.mac", "unicast"}},
		{"garbage-mac", nil, "IgnoreUnknown=1;MAC=zz", 7, []string{"CNI_ARGS MAC", "zz"}},
		{"hairpin-and-promisc", map[string]any{"hairpinMode": true, "promiscMode": true}, "", 7, []string{"hairpinMode", "promiscMode"}},
		{"ipam-without-container-iface", map[string]any{"disableContainerInterface": true}, "", 7, []string{"disableContainerInterface"}},
		{"vlan-range", map[string]any{"vlan": 5000}, "", 7, []string{"vlan", "5000"}},
		{"trunk-range", map[string]any{"vlanTrunk": []map[string]int{{"minID": 10}}}, "", 7, []string{"vlanTrunk", "maxID"}},
		{"bad-bridge-name", map[string]any{"bridge": "a-bridge-name-too-long"}, "", 7, []string{"bridge", "15"}},
		{"masq-backend", map[string]any{"ipMasq": true, "ipMasqBackend": "ebtables"}, "", 2, []string{"ipMasqBackend", "ebtables"}},
		{"wrong-type", map[string]any{"mtu": "big"}, "", 6, []string{"mtu"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := e.node.NewPod(t)
			call := testenv.Call{Bin: e.bin, Command: "ADD", ContainerID: "fail-" + c.name, IfName: "eth0", Netns: p.Path,
				Path: e.path, Config: e.conf(c.kv), In: e.node.NS, Args: c.args}
			o := testenv.Run(t, call)
			if c.code == 0 && o.ExitCode != 0 {
				c.code = o.Err.Code
			}
			o.MustFail(t, c.code).ErrContains(t, c.errHas...)
			e.nothingLeft()
			if l := links(t, p); len(l) != 1 {
				t.Fatalf("pod links after failed ADD: %v", l)
			}
		})
	}
}

func TestConfigErrorsChangeNothing(t *testing.T) {
	e := newEnv(t)
	p := e.node.NewPod(t)
	e.call("ADD", p, "c1", "eth0", e.conf(map[string]any{"vlan": -1})).MustFail(t, types.ErrInvalidNetworkConfig)
	if l := links(t, e.node.NS); len(l) != 1 {
		t.Fatalf("node links after a config error: %v", l)
	}
}

func TestDelIdempotentAndWithoutNetns(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"macspoofchk": true})
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	withP := withPrev(t, conf, r)
	for i := 0; i < 2; i++ {
		if o := e.call("DEL", p, "c1", "eth0", withP).MustSucceed(t); len(o.Stdout) != 0 {
			t.Fatalf("DEL printed: %s", o.Stdout)
		}
		e.nothingLeft()
	}
	if l := links(t, p); len(l) != 1 {
		t.Fatalf("pod links after DEL: %v", l)
	}
	// Netns gone before DEL, no prevResult: the reservation and the spoof check still go.
	p2 := e.node.NewPod(t)
	e.add(p2, "c2", conf)
	p2.Delete(t)
	e.call("DEL", p2, "c2", "eth0", conf).MustSucceed(t)
	e.call("DEL", nil, "c2", "eth0", conf).MustSucceed(t)
	e.nothingLeft()
	// A netns path that outlived its mount (a plain file) counts as gone.
	stale := testenv.NS{Name: "stale", Path: filepath.Join(t.TempDir(), "netns")}
	if err := os.WriteFile(stale.Path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.call("DEL", &stale, "c2", "eth0", conf).MustSucceed(t)
	// A garbled prevResult does not stop DEL.
	p3 := e.node.NewPod(t)
	e.add(p3, "c3", conf)
	bad := []byte(strings.Replace(string(conf), `"cniVersion"`, `"prevResult":{"cniVersion":"1.0.0","ips":"x"},"cniVersion"`, 1))
	e.call("DEL", p3, "c3", "eth0", bad).MustSucceed(t)
	e.nothingLeft()
}

func TestCheckNamesWhatIsMissing(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"isDefaultGateway": true, "ipam": e.ipam("10.22.0.0/24", "fd00:22::/64")})
	p := e.node.NewPod(t)
	r := e.add(p, "c1", conf)
	withP := withPrev(t, conf, r)
	check := func() testenv.Out { return e.call("CHECK", p, "c1", "eth0", withP) }
	check().MustSucceed(t)
	e.call("CHECK", p, "c1", "eth0", conf).MustFail(t, types.ErrInvalidNetworkConfig).ErrContains(t, "prevResult")

	steps := []struct {
		name         string
		break_, heal func()
		errHas       []string
	}{
		{"route", func() { p.MustExec(t, "ip", "route", "del", "default") }, func() { p.MustExec(t, "ip", "route", "add", "default", "via", "10.22.0.1") },
			[]string{"route to 0.0.0.0/0 via 10.22.0.1", "missing"}},
		{"ipv6-route", func() { p.MustExec(t, "ip", "-6", "route", "del", "default") }, func() { p.MustExec(t, "ip", "-6", "route", "add", "default", "via", "fd00:22::1") },
			[]string{"::/0", "missing"}},
		{"address", func() { p.MustExec(t, "ip", "addr", "del", r.IPs[1].Address.String(), "dev", "eth0") },
			func() { p.MustExec(t, "ip", "addr", "add", r.IPs[1].Address.String(), "dev", "eth0", "nodad") },
			[]string{"address " + r.IPs[1].Address.String(), "missing", `"eth0"`}},
		{"bridge-down", func() { e.node.MustExec(t, "ip", "link", "set", "cni0", "down") }, func() { e.node.MustExec(t, "ip", "link", "set", "cni0", "up") },
			[]string{`bridge "cni0" is down`}},
		{"veth-detached", func() { e.node.MustExec(t, "ip", "link", "set", r.Interfaces[1].Name, "nomaster") },
			func() { e.node.MustExec(t, "ip", "link", "set", r.Interfaces[1].Name, "master", "cni0") },
			[]string{r.Interfaces[1].Name, "not attached", `"cni0"`}},
		{"container-mac", func() { p.MustExec(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:00:99") },
			func() { p.MustExec(t, "ip", "link", "set", "eth0", "address", r.Interfaces[2].Mac) },
			[]string{`"eth0"`, "02:00:00:00:00:99", r.Interfaces[2].Mac}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.break_()
			check().MustFail(t, 999).ErrContains(t, s.errHas...)
			s.heal()
			check().MustSucceed(t)
		})
	}
	// The container interface gone.
	p.MustExec(t, "ip", "link", "del", "eth0")
	check().MustFail(t, 999).ErrContains(t, `container interface "eth0" not found`)
}

func TestGCAndStatus(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"cniVersion": "1.1.0"})
	p := e.node.NewPod(t)
	e.add(p, "c1", conf)
	e.call("STATUS", nil, "", "", conf).MustSucceed(t)
	gc := withKey(t, conf, "cni.dev/valid-attachments", []map[string]string{{"containerID": "c1", "ifname": "eth0"}})
	e.call("GC", nil, "", "", gc).MustSucceed(t)
	e.call("STATUS", nil, "", "", e.conf(map[string]any{"cniVersion": "1.1.0", "ipam": map[string]any{"type": "no-such-ipam"}})).
		MustFail(t, 999).ErrContains(t, "no-such-ipam")
}

func TestTenPodsAddDel(t *testing.T) {
	// Ten dual-stack pods on one bridge, then all removed: nothing is left (the time is only
	// logged; timing goals live in BenchmarkBridgeAddDel).
	e := newEnv(t)
	conf := e.conf(map[string]any{"ipam": e.ipam("10.22.0.0/24", "fd00:22::/64")})
	pods := make([]*testenv.NS, 10)
	for i := range pods {
		pods[i] = e.node.NewPod(t)
	}
	start := time.Now()
	for i, p := range pods {
		e.add(p, fmt.Sprintf("m%d", i), conf)
	}
	for i, p := range pods {
		e.call("DEL", p, fmt.Sprintf("m%d", i), "eth0", conf).MustSucceed(t)
	}
	t.Logf("10 ADD+DEL pairs in %s", time.Since(start))
	e.nothingLeft()
}

var vethRE = regexp.MustCompile(`^veth[0-9a-f]{8}$`)

func TestHostVethNames(t *testing.T) {
	e := newEnv(t)
	r := e.add(e.node.NewPod(t), "c1", e.conf(nil))
	if !vethRE.MatchString(r.Interfaces[1].Name) {
		t.Fatalf("host veth name %q, want veth and 8 hex digits", r.Interfaces[1].Name)
	}
}

// A bridge made elsewhere, without ports, takes its first port's MAC: the result and CHECK
// follow the bridge as it is after the ADD, with and without isGateway.
func TestExistingBridgeMACReported(t *testing.T) {
	for _, gw := range []bool{false, true} {
		t.Run(fmt.Sprintf("isGateway=%v", gw), func(t *testing.T) {
			e := newEnv(t)
			e.node.MustExec(t, "ip", "link", "add", "cni0", "type", "bridge")
			p := e.node.NewPod(t)
			conf := e.conf(map[string]any{"isGateway": gw})
			r := e.add(p, "c1", conf)
			if out := e.node.MustExec(t, "ip", "-o", "link", "show", "cni0"); !strings.Contains(out, "link/ether "+r.Interfaces[0].Mac) {
				t.Fatalf("result bridge MAC %s, bridge: %s", r.Interfaces[0].Mac, out)
			}
			e.call("CHECK", p, "c1", "eth0", withPrev(t, conf, r)).MustSucceed(t)
		})
	}
}

// A result that cannot be given in the config's version (0.2.0 needs an IP) fails the ADD,
// which is then undone like any other failure.
func TestUnconvertibleResultRollsBack(t *testing.T) {
	e := newEnv(t)
	p := e.node.NewPod(t)
	e.call("ADD", p, "c1", "eth0", e.conf(map[string]any{"cniVersion": "0.2.0", "ipam": nil, "isGateway": false})).
		MustFail(t, 999).ErrContains(t, "convert")
	e.nothingLeft()
	if l := links(t, p); len(l) != 1 {
		t.Fatalf("pod links after failed ADD: %v", l)
	}
}

// Concurrent ADDs on a node without the bridge race to create it and to give it its gateway
// address: all succeed with distinct addresses, and all reach the gateway.
func TestConcurrentAddsOnFreshNode(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"ipMasq": true})
	const n = 8
	pods := make([]*testenv.NS, n)
	for i := range pods {
		pods[i] = e.node.NewPod(t)
	}
	outs := make([]testenv.Out, n)
	done := make(chan int)
	for i := range pods {
		go func(i int) {
			outs[i] = testenv.Run(t, testenv.Call{Bin: e.bin, Command: "ADD", ContainerID: fmt.Sprintf("cc%d", i), IfName: "eth0",
				Netns: pods[i].Path, Path: e.path, Config: conf, In: e.node.NS})
			done <- i
		}(i)
	}
	for range pods {
		<-done
	}
	seen := map[string]bool{}
	for i, o := range outs {
		r := o.MustSucceed(t).Result(t, "1.0.0")
		ip := ipOf(r, true)
		if seen[ip] {
			t.Fatalf("address %s handed out twice", ip)
		}
		seen[ip] = true
		ping(t, pods[i], "10.22.0.1")
	}
	for i := range pods {
		e.call("DEL", pods[i], fmt.Sprintf("cc%d", i), "eth0", conf).MustSucceed(t)
	}
	e.nothingLeft()
}
