package hostlocal_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/ipalloc"
	"github.com/cni-suite/cni-suite/pkg/testenv"
)

const netName = "hlnet"

// env is a node netns, a pod netns, a data dir and the plugin binaries to run there.
type env struct {
	node    *testenv.Node
	pod     *testenv.NS
	ours    string // our host-local binary
	dataDir string
}

func setup(t testing.TB) *env {
	t.Helper()
	node := testenv.NewNode(t)
	return &env{
		node: node, pod: node.NewPod(t), dataDir: node.DataDir,
		ours: filepath.Join(testenv.PluginDir(t), "host-local"),
	}
}

func (e *env) netDir() string { return filepath.Join(e.dataDir, netName) }

// conf renders a network config whose ipam section is ipam (a JSON object without dataDir,
// which is added), plus extra top-level keys.
func (e *env) conf(t testing.TB, cniVersion, ipam string, extra map[string]any) []byte {
	t.Helper()
	var ip map[string]any
	if err := json.Unmarshal([]byte(ipam), &ip); err != nil {
		t.Fatalf("test ipam %s: %v", ipam, err)
	}
	ip["type"] = "host-local"
	if _, ok := ip["dataDir"]; !ok {
		ip["dataDir"] = e.dataDir
	}
	m := map[string]any{"cniVersion": cniVersion, "name": netName, "type": "bridge", "ipam": ip}
	for k, v := range extra {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) call(bin, cmd, cid string, conf []byte) testenv.Call {
	return testenv.Call{
		Bin: bin, Command: cmd, ContainerID: cid, Netns: e.pod.Path, IfName: "eth0",
		In: e.node.NS, Config: conf,
	}
}

func (e *env) run(t testing.TB, bin, cmd, cid string, conf []byte) testenv.Out {
	t.Helper()
	return testenv.Run(t, e.call(bin, cmd, cid, conf))
}

// add runs ADD and returns the addresses of the result (1.0.0 configs).
func (e *env) add(t testing.TB, bin, cid string, conf []byte) []string {
	t.Helper()
	o := e.run(t, bin, "ADD", cid, conf).MustSucceed(t)
	return ips(t, o)
}

func ips(t testing.TB, o testenv.Out) []string {
	t.Helper()
	var r struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal(o.Stdout, &r); err != nil {
		t.Fatalf("result: %v: %s", err, o.Stdout)
	}
	var out []string
	for _, ip := range r.IPs {
		out = append(out, ip.Address)
	}
	return out
}

// withPrev adds prevResult (a plugin's stdout) to a config.
func withPrev(t testing.TB, conf, result []byte) []byte {
	t.Helper()
	var m map[string]any
	var r any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(result, &r); err != nil {
		t.Fatal(err)
	}
	m["prevResult"] = r
	b, _ := json.Marshal(m)
	return b
}

// reservations maps each reservation file of the network to its content.
func (e *env) reservations(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	es, err := os.ReadDir(e.netDir())
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, de := range es {
		n := de.Name()
		if n == "lock" || strings.HasPrefix(n, "last_reserved_ip.") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(e.netDir(), n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = string(b)
	}
	return out
}

func (e *env) heldBy(t testing.TB, cid string) []string {
	t.Helper()
	var out []string
	for ip, c := range e.reservations(t) {
		if c == cid+"\r\neth0" || strings.TrimSpace(c) == cid {
			out = append(out, ip)
		}
	}
	sort.Strings(out)
	return out
}

func (e *env) checkIndex(t testing.TB) {
	t.Helper()
	fresh, err := ipalloc.New(e.dataDir, netName, ipalloc.Options{}).CheckIndex(context.Background())
	if err != nil {
		t.Fatalf("index disagrees with the network directory: %v", err)
	}
	if !fresh {
		t.Fatalf("index not fresh after our own operation")
	}
}

// checkDebris asserts the network directory holds only complete reservations, the lock and
// last_reserved_ip files: nothing half written, nothing of ours that the reference would trip on.
func (e *env) checkDebris(t testing.TB) {
	t.Helper()
	es, err := os.ReadDir(e.netDir())
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	for _, de := range es {
		n := de.Name()
		if n == "lock" || strings.HasPrefix(n, "last_reserved_ip.") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(e.netDir(), n))
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(string(b), "\r\n")
		if len(parts) != 2 || parts[0] == "" || parts[1] != "eth0" {
			t.Fatalf("network directory holds %s = %q: not a complete reservation", n, b)
		}
	}
}

// proc is a plugin process started by hand (for concurrency and kill tests).
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
}

// start starts the plugin in the node netns without waiting for it.
func (e *env) start(bin, cmd, cid string, conf []byte, extraEnv ...string) (*proc, error) {
	p := &proc{cmd: exec.Command(bin)}
	p.cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + cid,
		"CNI_NETNS=" + e.pod.Path, "CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(bin),
	}, extraEnv...)
	p.cmd.Stdin = bytes.NewReader(conf)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	err := e.node.Do(p.cmd.Start)
	return p, err
}

func (p *proc) wait() (*types.Error, error) {
	err := p.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if !ee.Exited() {
			return nil, fmt.Errorf("killed: %v", ee)
		}
		te := &types.Error{}
		if jerr := json.Unmarshal(p.stdout.Bytes(), te); jerr != nil {
			return nil, fmt.Errorf("exit %d without an error object: %s %s", ee.ExitCode(), p.stdout.String(), p.stderr.String())
		}
		return te, nil
	}
	return nil, err
}
