package installer

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cni-suite/cni-suite/pkg/link"
	"github.com/cni-suite/cni-suite/pkg/testenv"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

// The MTU comes from the default route's link, read over netlink in the node's netns. The links
// are veth pairs with both ends in the node (this kernel has no dummy links).
func TestDefaultRouteMTU(t *testing.T) {
	cases := []struct {
		name    string
		setup   [][]string
		wantMTU int
		wantVia string
	}{
		{"ipv4 default route", [][]string{
			{"ip", "link", "add", "up0", "mtu", "1400", "type", "veth", "peer", "name", "up0p"},
			{"ip", "link", "set", "up0p", "up"},
			{"ip", "link", "add", "big0", "mtu", "9000", "type", "veth", "peer", "name", "big0p"},
			{"ip", "link", "set", "big0p", "up"},
			{"ip", "link", "set", "up0", "up"}, {"ip", "link", "set", "big0", "up"},
			{"ip", "addr", "add", "10.77.0.2/24", "dev", "up0"},
			{"ip", "addr", "add", "10.78.0.2/24", "dev", "big0"},
			{"ip", "route", "add", "default", "via", "10.77.0.1", "dev", "up0"},
		}, 1400, "up0"},
		{"lowest metric wins", [][]string{
			{"ip", "link", "add", "a0", "mtu", "1450", "type", "veth", "peer", "name", "a0p"},
			{"ip", "link", "set", "a0p", "up"},
			{"ip", "link", "add", "b0", "mtu", "1350", "type", "veth", "peer", "name", "b0p"},
			{"ip", "link", "set", "b0p", "up"},
			{"ip", "link", "set", "a0", "up"}, {"ip", "link", "set", "b0", "up"},
			{"ip", "addr", "add", "10.77.0.2/24", "dev", "a0"},
			{"ip", "addr", "add", "10.78.0.2/24", "dev", "b0"},
			{"ip", "route", "add", "default", "via", "10.77.0.1", "dev", "a0", "metric", "200"},
			{"ip", "route", "add", "default", "via", "10.78.0.1", "dev", "b0", "metric", "100"},
		}, 1350, "b0"},
		{"route mtu below the link's", [][]string{
			{"ip", "link", "add", "up0", "mtu", "1500", "type", "veth", "peer", "name", "up0p"},
			{"ip", "link", "set", "up0p", "up"},
			{"ip", "link", "set", "up0", "up"},
			{"ip", "addr", "add", "10.77.0.2/24", "dev", "up0"},
			{"ip", "route", "add", "default", "via", "10.77.0.1", "dev", "up0", "mtu", "lock", "1280"},
		}, 1280, "up0"},
		{"ipv6 only", [][]string{
			{"ip", "link", "add", "v6", "mtu", "1300", "type", "veth", "peer", "name", "v6p"},
			{"ip", "link", "set", "v6p", "up"},
			{"ip", "link", "set", "v6", "up"},
			{"ip", "-6", "addr", "add", "fd00:77::2/64", "dev", "v6", "nodad"},
			{"ip", "-6", "route", "add", "default", "via", "fd00:77::1", "dev", "v6"},
		}, 1300, "v6"},
		{"no default route", [][]string{
			{"ip", "link", "add", "up0", "mtu", "1400", "type", "veth", "peer", "name", "up0p"},
			{"ip", "link", "set", "up0p", "up"},
			{"ip", "link", "set", "up0", "up"},
			{"ip", "addr", "add", "10.77.0.2/24", "dev", "up0"},
		}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			node := testenv.NewNode(t)
			for _, cmd := range c.setup {
				node.MustExec(t, cmd[0], cmd[1:]...)
			}
			h, err := link.OpenHandle(node.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			mtu, via, err := DefaultRouteMTU(h.Handle)
			if err != nil {
				t.Fatal(err)
			}
			if mtu != c.wantMTU || via != c.wantVia {
				t.Errorf("DefaultRouteMTU = %d via %q, want %d via %q", mtu, via, c.wantMTU, c.wantVia)
			}
		})
	}
}

// The rendered config, with the MTU read from the node, through a real ADD, STATUS and DEL as a
// runtime runs it (libcni, as containerd and CRI-O do), with the reference plugins and with ours.
func TestRenderedConfigAddDel(t *testing.T) {
	impls := []struct{ name, dir string }{
		{"reference " + testenv.RefVersion, refPluginDir(t)},
		{"cni-suite", testenv.PluginDir(t)},
	}
	for i, impl := range impls {
		t.Run(impl.name, func(t *testing.T) {
			for _, p := range []string{"bridge", "host-local", "portmap"} {
				if _, err := os.Stat(filepath.Join(impl.dir, p)); err != nil {
					t.Skipf("%s has no %s yet (the suite's plugins land separately): %v", impl.dir, p, err)
				}
			}
			addDelOnce(t, impl.dir, fmt.Sprintf("10.99.%d.0/24", i+1))
		})
	}
}

func addDelOnce(t *testing.T, pluginDir, cidr string) {
	node := testenv.NewNode(t)
	pod := node.NewPod(t)
	for _, cmd := range [][]string{
		{"ip", "link", "add", "uplink", "mtu", "1400", "type", "veth", "peer", "name", "uplinkp"},
		{"ip", "link", "set", "uplinkp", "up"},
		{"ip", "link", "set", "uplink", "up"},
		{"ip", "addr", "add", "10.98.0.2/24", "dev", "uplink"},
		{"ip", "route", "add", "default", "via", "10.98.0.1", "dev", "uplink"},
	} {
		node.MustExec(t, cmd[0], cmd[1:]...)
	}
	h, err := link.OpenHandle(node.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var data []byte
	var cfg ConfigOptions
	dir := t.TempDir()
	cfg = ConfigOptions{ConfDir: dir, PodCIDRs: []string{cidr}, Once: true, Logf: t.Logf,
		Net:       conflist.NetParams{DataDir: node.DataDir},
		DetectMTU: func() (int, string, error) { return DefaultRouteMTU(h.Handle) }}
	if err := RunConfig(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	data = mustRead(t, filepath.Join(dir, conflist.ConfFileName(conflist.DefaultNetworkName)))
	if !strings.Contains(string(data), `"mtu": 1400`) {
		t.Fatalf("config lacks the node's MTU:\n%s", data)
	}
	list, err := libcni.ConfListFromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	cni := libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, t.TempDir(), nil)
	rt := &libcni.RuntimeConf{
		ContainerID: "install-test-1", NetNS: pod.Path, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", "p1"}},
		CapabilityArgs: map[string]any{"portMappings": []map[string]any{
			{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}}},
	}
	ctx := context.Background()
	var res *current.Result
	err = node.Do(func() error {
		r, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		res, err = current.NewResultFromResult(r)
		return err
	})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	delDone := false
	defer func() {
		if !delDone {
			node.Do(func() error { return cni.DelNetworkList(ctx, list, rt) })
		}
	}()
	prefix := netip.MustParsePrefix(cidr)
	if len(res.IPs) != 1 {
		t.Fatalf("ADD result IPs %v", res.IPs)
	}
	ip, _ := netip.AddrFromSlice(res.IPs[0].Address.IP.To4())
	if !prefix.Contains(ip) {
		t.Fatalf("pod IP %s outside the pod CIDR %s", ip, cidr)
	}
	if out := pod.MustExec(t, "ip", "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("pod eth0 without the node's MTU: %s", out)
	}
	if out := pod.MustExec(t, "ip", "route", "show", "default"); !strings.Contains(out, "default via") {
		t.Errorf("pod has no default route: %q", out)
	}
	if out := node.MustExec(t, "bridge", "-d", "link", "show"); !strings.Contains(out, "hairpin on") {
		t.Errorf("hairpin mode not set on the pod's bridge port:\n%s", out)
	}
	node.MustExec(t, "ping", "-c", "1", "-W", "5", ip.String())
	if out := node.MustExec(t, "iptables-save", "-t", "nat"); !strings.Contains(out, "--dport 18080") {
		t.Errorf("no hostPort DNAT rule after ADD:\n%s", out)
	}
	reservation := filepath.Join(node.DataDir, conflist.DefaultNetworkName, ip.String())
	if _, err := os.Stat(reservation); err != nil {
		t.Errorf("no host-local reservation in the rendered dataDir: %v", err)
	}
	if err := node.Do(func() error { return cni.GetStatusNetworkList(ctx, list) }); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if err := node.Do(func() error { return cni.DelNetworkList(ctx, list, rt) }); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	delDone = true
	if _, err := os.Stat(reservation); !os.IsNotExist(err) {
		t.Errorf("reservation left after DEL: %v", err)
	}
	if out := node.MustExec(t, "iptables-save", "-t", "nat"); strings.Contains(out, "--dport 18080") || strings.Contains(out, "install-test-1") {
		t.Errorf("NAT rules left after DEL:\n%s", out)
	}
	if out := node.MustExec(t, "ip", "-o", "link", "show", "master", conflist.DefaultBridge); strings.TrimSpace(out) != "" {
		t.Errorf("pod veth left on the bridge after DEL: %s", out)
	}
}
