package bridge_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// env is one node netns with our bridge binary and an IPAM plugin on CNI_PATH (ours first,
// then the reference's, so the reference host-local serves until ours lands).
type env struct {
	t    *testing.T
	node *testenv.Node
	bin  string // the bridge binary under test
	path string // CNI_PATH
}

func newEnv(t *testing.T) *env {
	t.Helper()
	node := testenv.NewNode(t)
	ours := testenv.PluginDir(t)
	return &env{t: t, node: node, bin: filepath.Join(ours, "bridge"),
		path: ours + ":" + testenv.RefPluginDir(t, testenv.RefVersion)}
}

// ref is the same node running the reference bridge instead.
func (e *env) ref() *env {
	r := *e
	r.bin = filepath.Join(testenv.RefPluginDir(e.t, testenv.RefVersion), "bridge")
	return &r
}

// conf is the base config (bridge cni0, host-local on 10.22.0.0/24 in the node's data dir)
// with keys overridden or added by kv (a nil value deletes the key).
func (e *env) conf(kv map[string]any) []byte {
	e.t.Helper()
	m := map[string]any{
		"cniVersion": "1.0.0", "name": "brnet", "type": "bridge", "bridge": "cni0",
		"isGateway": true,
		"ipam": map[string]any{"type": "host-local", "dataDir": e.node.DataDir,
			"ranges": [][]map[string]string{{{"subnet": "10.22.0.0/24"}}}},
	}
	for k, v := range kv {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func ranges(subnets ...string) map[string]any {
	var rs [][]map[string]string
	for _, s := range subnets {
		rs = append(rs, []map[string]string{{"subnet": s}})
	}
	return map[string]any{"type": "host-local", "ranges": rs}
}

// ipam is an ipam section over subnets in the node's data dir.
func (e *env) ipam(subnets ...string) map[string]any {
	m := ranges(subnets...)
	m["dataDir"] = e.node.DataDir
	return m
}

func (e *env) call(cmd string, pod *testenv.NS, cid, ifName string, conf []byte) testenv.Out {
	e.t.Helper()
	c := testenv.Call{Bin: e.bin, Command: cmd, ContainerID: cid, IfName: ifName, Path: e.path,
		Config: conf, In: e.node.NS}
	if pod != nil {
		c.Netns = pod.Path
	}
	return testenv.Run(e.t, c)
}

// add runs a successful ADD of pod as container cid on eth0.
func (e *env) add(pod *testenv.NS, cid string, conf []byte) *current.Result {
	e.t.Helper()
	return e.call("ADD", pod, cid, "eth0", conf).MustSucceed(e.t).Result(e.t, "1.0.0")
}

// withPrev is conf with prevResult set to the result r.
func withPrev(t *testing.T, conf []byte, r *current.Result) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var prev any
	_ = json.Unmarshal(b, &prev)
	m["prevResult"] = prev
	out, _ := json.Marshal(m)
	return out
}

func ping(t *testing.T, from *testenv.NS, to string) {
	t.Helper()
	args := []string{"-c", "1", "-W", "2", to}
	if strings.Contains(to, ":") {
		args = append([]string{"-6"}, args...)
	}
	if out, err := from.Exec("ping", args...); err != nil {
		// One retry: the very first packet may race neighbour resolution.
		if out2, err2 := from.Exec("ping", args...); err2 != nil {
			t.Fatalf("ping %s from %s failed:\n%s\n%s", to, from.Name, out, out2)
		}
	}
}

func noPing(t *testing.T, from *testenv.NS, to string) {
	t.Helper()
	if out, err := from.Exec("ping", "-c", "2", "-i", "0.2", "-W", "1", to); err == nil {
		t.Fatalf("ping %s from %s succeeded, want it blocked:\n%s", to, from.Name, out)
	}
}

func ipOf(r *current.Result, v4 bool) string {
	for _, ip := range r.IPs {
		if (ip.Address.IP.To4() != nil) == v4 {
			return ip.Address.IP.String()
		}
	}
	return ""
}

// links lists the link names of a netns.
func links(t *testing.T, n *testenv.NS) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(n.MustExec(t, "ip", "-o", "link", "show")), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 {
			out = append(out, strings.SplitN(strings.TrimSuffix(f[1], ":"), "@", 2)[0])
		}
	}
	return out
}

// vethsOf lists the node's veth* links.
func vethsOf(t *testing.T, n *testenv.NS) []string {
	var out []string
	for _, l := range links(t, n) {
		if strings.HasPrefix(l, "veth") {
			out = append(out, l)
		}
	}
	return out
}

// reservations lists host-local's reservation files of network brnet.
func (e *env) reservations() []string {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.node.DataDir, "brnet"))
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	var out []string
	for _, d := range ents {
		if n := d.Name(); n != "lock" && !strings.HasPrefix(n, "last_reserved_ip") {
			out = append(out, n)
		}
	}
	return out
}

// nothingLeft fails unless the node has no veth and no reservation and no spoof-check chain.
func (e *env) nothingLeft() {
	e.t.Helper()
	// A deleted pod netns takes its veth along asynchronously (the kernel's netns cleanup
	// work): give that a moment; a real leak stays.
	v := vethsOf(e.t, e.node.NS)
	for deadline := time.Now().Add(10 * time.Second); len(v) != 0 && time.Now().Before(deadline); v = vethsOf(e.t, e.node.NS) {
		time.Sleep(50 * time.Millisecond)
	}
	if len(v) != 0 {
		e.t.Errorf("veths left on the node: %v", v)
	}
	if r := e.reservations(); len(r) != 0 {
		e.t.Errorf("IPAM reservations left: %v", r)
	}
	if out, _ := e.node.Exec("nft", "list", "ruleset"); strings.Contains(out, "cni-br-iface") {
		e.t.Errorf("spoof-check chains left:\n%s", out)
	} else if strings.Contains(out, " masquerade comment ") {
		e.t.Errorf("nftables masquerade rules left:\n%s", out)
	}
	if out, _ := e.node.Exec("iptables-save", "-t", "nat"); strings.Contains(out, "CNI-") {
		e.t.Errorf("masquerade rules left:\n%s", out)
	}
}

var counterRE = regexp.MustCompile(`\[\d+:\d+\]`)

// natSave is iptables-save (or ip6tables-save) -t nat of the node without comments/counters.
func natSave(t *testing.T, n *testenv.NS, prog string) string {
	t.Helper()
	var keep []string
	for _, l := range strings.Split(n.MustExec(t, prog, "-t", "nat"), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			keep = append(keep, counterRE.ReplaceAllString(l, "[0:0]"))
		}
	}
	return strings.Join(keep, "\n")
}

func withKey(t *testing.T, conf []byte, key string, v any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = v
	out, _ := json.Marshal(m)
	return out
}
