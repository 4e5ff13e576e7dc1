package reliability

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/testenv"
	"github.com/cni-suite/cni-suite/test/internal/harness"
)

// badEnv is what a bad-input case runs in: a fresh node, a pod, a data dir.
type badEnv struct {
	node       *testenv.Node
	pod        *testenv.NS
	pluginName string
}

// badCase is one bad input to one plugin. Ours must answer with one of codes (the CNI
// error codes of ../shared/CNI-CHECKLIST.md: 6 for undecodable input, 7 for an invalid
// value naming its key, 2 for an unsupported value, 4 for bad environment variables),
// with every fragment of mention in the message, and change nothing on the node.
// The reference's answer is recorded in ref (0: it accepts the input), and refChanges
// says it changes the node although it fails (a known finding).
type badCase struct {
	plugin  string
	name    string
	command string                          // default ADD
	conf    func(base map[string]any) any   // the config to send (a map, or []byte raw)
	env     func(c *testenv.Call, e badEnv) // environment changes
	before  func(t *testing.T, s side, e badEnv, conf []byte)
	codes   []uint
	mention []string
	ref     uint
	// refChanges: the reference changes the node on this input although it fails.
	refChanges bool
}

const (
	codeDecode  = types.ErrDecodingFailure             // 6
	codeInvalid = types.ErrInvalidNetworkConfig        // 7
	codeEnv     = types.ErrInvalidEnvironmentVariables // 4
	codeUnsupp  = types.ErrUnsupportedField            // 2
	codeNetNS   = types.ErrInvalidNetNS                // 8
	codeInt     = types.ErrInternal                    // 999
)

func baseConfig(plugin string, e badEnv) map[string]any {
	ipam := map[string]any{
		"type":    "host-local",
		"ranges":  []any{[]any{map[string]any{"subnet": "10.77.0.0/24"}}},
		"dataDir": e.node.DataDir,
	}
	m := map[string]any{"cniVersion": "1.0.0", "name": "cnis-bad", "type": plugin}
	switch plugin {
	case "bridge":
		m["bridge"], m["isGateway"], m["ipMasq"], m["ipam"] = "cnisbr1", true, true, ipam
	case "host-local":
		m["ipam"] = ipam
	case "portmap":
		m["snat"] = true
		m["capabilities"] = map[string]any{"portMappings": true}
		m["runtimeConfig"] = map[string]any{"portMappings": []any{
			map[string]any{"hostPort": 20080, "containerPort": 80, "protocol": "tcp"}}}
		m["prevResult"] = map[string]any{
			"cniVersion": "1.0.0",
			"interfaces": []any{map[string]any{"name": "eth0", "sandbox": e.pod.Path}},
			"ips":        []any{map[string]any{"address": "10.77.0.5/24", "interface": 0}},
		}
	}
	return m
}

// at walks a path of map keys and slice indexes ("ipam", "ranges", 0, 0) and returns the
// map holding the last key.
func at(m map[string]any, path ...any) map[string]any {
	var cur any = m
	for _, p := range path {
		switch k := p.(type) {
		case string:
			cur = cur.(map[string]any)[k]
		case int:
			cur = cur.([]any)[k]
		}
	}
	return cur.(map[string]any)
}

func set(path []any, key string, v any) func(map[string]any) any {
	return func(m map[string]any) any { at(m, path...)[key] = v; return m }
}

func del(path []any, key string) func(map[string]any) any {
	return func(m map[string]any) any { delete(at(m, path...), key); return m }
}

func raw(b []byte) func(map[string]any) any { return func(map[string]any) any { return b } }

var (
	top   = []any{}
	ipamP = []any{"ipam"}
	rng0  = []any{"ipam", "ranges", 0, 0}
	pm0   = []any{"runtimeConfig", "portMappings", 0}
)

// hugeGarbage is 8 MiB of non-JSON.
var hugeGarbage = bytes.Repeat([]byte("x"), 8<<20)

// commonBad are the rows every plugin gets.
func commonBad(plugin string) []badCase {
	return []badCase{
		{plugin: plugin, name: "malformed-json", conf: raw([]byte(`{"cniVersion":"1.0.0","name":`)), codes: []uint{codeDecode}, ref: codeDecode},
		{plugin: plugin, name: "huge-stdin", conf: raw(hugeGarbage), codes: []uint{codeDecode}, ref: codeDecode},
		{plugin: plugin, name: "cniVersion-wrong-type", conf: set(top, "cniVersion", 1), codes: []uint{codeDecode}, ref: codeDecode},
		{plugin: plugin, name: "name-missing", conf: del(top, "name"), codes: []uint{codeInvalid}, mention: []string{"name"}, ref: codeInvalid},
		{plugin: plugin, name: "ifname-too-long", env: func(c *testenv.Call, _ badEnv) { c.IfName = "eth0123456789abc" },
			codes: []uint{codeEnv}, ref: codeEnv},
		{plugin: plugin, name: "ifname-slash", env: func(c *testenv.Call, _ badEnv) { c.IfName = "eth/0" },
			codes: []uint{codeEnv}, ref: codeEnv},
		{plugin: plugin, name: "netns-empty", env: func(c *testenv.Call, _ badEnv) { c.Unset = []string{"CNI_NETNS"} },
			codes: []uint{codeEnv}, mention: []string{"CNI_NETNS"}, ref: codeEnv},
	}
}

var badCases = func() []badCase {
	var all []badCase
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		all = append(all, commonBad(p)...)
	}
	// A netns path that is relative, or not a netns: plugins that enter the netns must
	// refuse it before changing anything.
	// (The reference bridge creates the bridge before it opens the netns.)
	for _, p := range []string{"bridge", "loopback"} {
		all = append(all,
			badCase{plugin: p, name: "netns-relative", env: func(c *testenv.Call, e badEnv) { c.Netns = strings.TrimPrefix(e.pod.Path, "/") },
				codes: []uint{codeEnv, codeNetNS}, ref: codeInt, refChanges: p == "bridge"},
			badCase{plugin: p, name: "netns-not-a-netns", env: func(c *testenv.Call, e badEnv) { c.Netns = e.node.DataDir },
				codes: []uint{codeEnv, codeNetNS}, ref: codeInt, refChanges: p == "bridge"},
		)
	}
	// IPAM config, through bridge (delegating) and host-local alone. The reference bridge
	// creates the bridge and the veth pair before it runs IPAM, and leaves both (and the
	// pod's eth0) when IPAM fails.
	for _, p := range []string{"bridge", "host-local"} {
		var ipamRows []badCase
		ipamRows = append(ipamRows,
			badCase{plugin: p, name: "ipam-ranges-wrong-type", conf: set(ipamP, "ranges", "10.77.0.0/24"), codes: []uint{codeDecode}},
			badCase{plugin: p, name: "ipam-ranges-missing", conf: del(ipamP, "ranges"), codes: []uint{codeInvalid}, mention: []string{"ranges"}},
			badCase{plugin: p, name: "ipam-subnet-invalid", conf: set(rng0, "subnet", "10.77.0.0/33"), codes: []uint{codeInvalid, codeDecode}, mention: []string{"subnet"}},
			badCase{plugin: p, name: "ipam-subnet-not-cidr", conf: set(rng0, "subnet", "not-a-cidr"), codes: []uint{codeInvalid, codeDecode}, mention: []string{"subnet"}},
			badCase{plugin: p, name: "ipam-rangeStart-outside", conf: set(rng0, "rangeStart", "10.78.0.5"), codes: []uint{codeInvalid}, mention: []string{"rangeStart"}},
			badCase{plugin: p, name: "ipam-rangeEnd-before-start", conf: func(m map[string]any) any {
				at(m, rng0...)["rangeStart"], at(m, rng0...)["rangeEnd"] = "10.77.0.200", "10.77.0.100"
				return m
			}, codes: []uint{codeInvalid}, mention: []string{"rangeEnd"}},
			badCase{plugin: p, name: "ipam-gateway-invalid", conf: set(rng0, "gateway", "10.77.0.300"), codes: []uint{codeInvalid, codeDecode}, mention: []string{"gateway"}},
			badCase{plugin: p, name: "ipam-overlapping-ranges", conf: func(m map[string]any) any {
				at(m, ipamP...)["ranges"] = []any{
					[]any{map[string]any{"subnet": "10.77.0.0/24"}},
					[]any{map[string]any{"subnet": "10.77.0.128/25"}},
				}
				return m
			}, codes: []uint{codeInvalid}, mention: []string{"overlap"}},
			badCase{plugin: p, name: "ipam-args-ip-invalid", env: func(c *testenv.Call, _ badEnv) { c.Args = "IgnoreUnknown=1;IP=10.77.0.300" },
				codes: []uint{codeInvalid, codeDecode, codeEnv}, mention: []string{"IP"}},
			badCase{plugin: p, name: "ipam-exhausted", conf: set(rng0, "subnet", "10.77.0.0/30"),
				before: func(t *testing.T, s side, e badEnv, conf []byte) {
					// Take the only free address with another container first.
					c := badCall(s, "ADD", e, conf)
					c.ContainerID, c.IfName = "cnis-bad-first", "eth1"
					testenv.Run(t, c).MustSucceed(t)
				}},
		)
		for _, r := range ipamRows {
			r.ref, r.refChanges = codeInt, p == "bridge"
			all = append(all, r)
		}
	}
	all = append(all,
		badCase{plugin: "bridge", name: "bridge-wrong-type", conf: set(top, "bridge", 5), codes: []uint{codeDecode}, ref: codeInt},
		badCase{plugin: "bridge", name: "isGateway-wrong-type", conf: set(top, "isGateway", "yes"), codes: []uint{codeDecode}, ref: codeInt},
		badCase{plugin: "bridge", name: "mtu-wrong-type", conf: set(top, "mtu", "1500"), codes: []uint{codeDecode}, ref: codeInt},
		badCase{plugin: "bridge", name: "ipam-wrong-type", conf: set(top, "ipam", "host-local"), codes: []uint{codeDecode}, ref: codeInt},
		badCase{plugin: "bridge", name: "vlan-out-of-range", conf: set(top, "vlan", 5000), codes: []uint{codeInvalid}, mention: []string{"vlan"}, ref: codeInt},
		badCase{plugin: "bridge", name: "ipMasqBackend-unknown", conf: set(top, "ipMasqBackend", "pf"), codes: []uint{codeUnsupp}, mention: []string{"ipMasqBackend", "pf"}, ref: codeInt, refChanges: true},
		badCase{plugin: "bridge", name: "ipam-type-missing-plugin", conf: set(ipamP, "type", "no-such-ipam"), codes: []uint{codeInvalid, codeInt}, mention: []string{"no-such-ipam"}, ref: codeInt, refChanges: true},

		badCase{plugin: "portmap", name: "hostPort-wrong-type", conf: set(pm0, "hostPort", "80"), codes: []uint{codeDecode}, ref: codeInt},
		badCase{plugin: "portmap", name: "snat-wrong-type", conf: set(top, "snat", "yes"), codes: []uint{codeDecode}, ref: codeInt},
		badCase{plugin: "portmap", name: "hostPort-zero", conf: set(pm0, "hostPort", 0), codes: []uint{codeInvalid}, mention: []string{"hostPort"}, ref: codeInt},
		badCase{plugin: "portmap", name: "containerPort-too-big", conf: set(pm0, "containerPort", 70000), codes: []uint{codeInvalid}, mention: []string{"containerPort"}, ref: codeInt, refChanges: true},
		badCase{plugin: "portmap", name: "protocol-unknown", conf: set(pm0, "protocol", "icmp"), codes: []uint{codeInvalid}, mention: []string{"protocol"}, ref: codeInt, refChanges: true},
		badCase{plugin: "portmap", name: "markMasqBit-out-of-range", conf: set(top, "markMasqBit", 40), codes: []uint{codeInvalid}, mention: []string{"markMasqBit"}, ref: codeInt},
		badCase{plugin: "portmap", name: "backend-unknown", conf: set(top, "backend", "pf"), codes: []uint{codeUnsupp}, mention: []string{"backend", "pf"}, ref: codeInt},
		badCase{plugin: "portmap", name: "prevResult-missing", conf: del(top, "prevResult"), codes: []uint{codeInvalid}, mention: []string{"prevResult"}, ref: codeInt},
		badCase{plugin: "portmap", name: "prevResult-not-object", conf: set(top, "prevResult", "10.77.0.5"), codes: []uint{codeDecode, codeInvalid}, mention: []string{"prevResult"}, ref: codeInt},
		// A 0.2.0-shaped result (ip4, no ips) under a 1.0.0 config: read as 1.0.0 it has no
		// address, so there is nothing to map the ports to.
		badCase{plugin: "portmap", name: "prevResult-other-version", conf: set(top, "prevResult",
			map[string]any{"cniVersion": "0.2.0", "ip4": map[string]any{"ip": "10.77.0.5/24"}}),
			codes: []uint{codeDecode, codeInvalid}, mention: []string{"prevResult"}, ref: codeInt},
		badCase{plugin: "bridge", name: "check-prevResult-other-version", command: "CHECK", conf: func(m map[string]any) any {
			m["prevResult"] = map[string]any{"cniVersion": "0.2.0", "ip4": map[string]any{"ip": "10.77.0.5/24"}}
			return m
		}, codes: []uint{codeDecode, codeInvalid}, mention: []string{"prevResult"}, ref: codeInt, refChanges: true},
	)
	return all
}()

func badCall(s side, cmd string, e badEnv, conf []byte) testenv.Call {
	return testenv.Call{
		Bin: filepath.Join(s.dir, e.pluginName), Command: cmd, ContainerID: "cnis-bad-1",
		Netns: e.pod.Path, IfName: "eth0", Config: conf, In: e.node.NS,
	}
}

// TestBadInput: every bad input to every plugin gets a CNI error with the right code,
// a message naming what is wrong, and no change on the node (links, addresses, routes,
// iptables, nftables, the data dir, the pod's links).
func TestBadInput(t *testing.T) {
	testenv.RequireRoot(t)
	tried := map[string]int{}
	for _, c := range badCases {
		t.Run(c.plugin+"/"+c.name, func(t *testing.T) {
			forSides(t, []string{c.plugin}, func(t *testing.T, s side) {
				node := testenv.NewNode(t)
				e := badEnv{node: node, pod: node.NewPod(t), pluginName: c.plugin}
				var conf []byte
				var v any = baseConfig(c.plugin, e)
				if c.conf != nil {
					v = c.conf(v.(map[string]any))
				}
				if b, ok := v.([]byte); ok {
					conf = b
				} else {
					var err error
					if conf, err = json.Marshal(v); err != nil {
						t.Fatal(err)
					}
				}
				if c.before != nil {
					c.before(t, s, e, conf)
				}
				cmd := c.command
				if cmd == "" {
					cmd = "ADD"
				}
				call := badCall(s, cmd, e, conf)
				if c.env != nil {
					c.env(&call, e)
				}
				before := capture(t, node, e.pod.Path)
				o := testenv.Run(t, call)
				after := capture(t, node, e.pod.Path)
				changed := harness.Diff(before, after)
				got := uint(0)
				if o.Err != nil {
					got = o.Err.Code
				}
				tried[s.name]++
				if s.ref {
					if got != c.ref || (len(changed) > 0) != c.refChanges {
						t.Errorf("reference %s: code %d (want %d), changed the node: %v (want %v)\n%s\n%s",
							testenv.RefVersion, got, c.ref, len(changed) > 0, c.refChanges, o, strings.Join(changed, "\n"))
					}
					if len(changed) > 0 {
						t.Logf("FINDING (reference %s, known): %s/%s fails with code %d but changes the node:\n  %s",
							testenv.RefVersion, c.plugin, c.name, got, strings.Join(changed, "\n  "))
					}
					return
				}
				if o.ExitCode == 0 {
					t.Fatalf("ours accepted the bad input: %s", o)
				}
				ok := false
				for _, want := range c.codes {
					ok = ok || got == want
				}
				if len(c.codes) > 0 && !ok {
					t.Errorf("code %d, want one of %v: %s", got, c.codes, o)
				}
				if strings.TrimSpace(o.Err.Msg) == "" {
					t.Errorf("empty error message: %s", o)
				}
				o.ErrContains(t, c.mention...)
				if len(changed) > 0 {
					t.Errorf("ours changed the node on bad input:\n%s", strings.Join(changed, "\n"))
				}
			})
		})
	}
	t.Logf("bad inputs tried: %v", tried)
}
