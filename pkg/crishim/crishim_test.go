package crishim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestCRILogRecords(t *testing.T) {
	cases := []struct {
		name   string
		chunks []string
		want   []string
	}{
		{"lines", []string{"a\nb\n"}, []string{"stdout F a", "stdout F b"}},
		{"split across chunks", []string{"hel", "lo\nwor", "ld\n"}, []string{"stdout F hello", "stdout F world"}},
		{"unterminated end", []string{"last"}, []string{"stdout F last"}},
		{"empty line", []string{"\n"}, []string{"stdout F "}},
		{"long line", []string{strings.Repeat("x", maxLogLine+3) + "\n"}, []string{"stdout P " + strings.Repeat("x", maxLogLine), "stdout F xxx"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "c.log")
			l, err := openCRILog(path)
			if err != nil {
				t.Fatal(err)
			}
			l.now = func() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC) }
			ls := &lineSplitter{stream: "stdout", log: l}
			for _, ch := range c.chunks {
				ls.write([]byte(ch))
			}
			ls.flush()
			l.close()
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var want strings.Builder
			for _, w := range c.want {
				want.WriteString("2024-01-02T03:04:05.000000006Z " + w + "\n")
			}
			if string(b) != want.String() {
				t.Errorf("log:\n%q\nwant:\n%q", b, want.String())
			}
		})
	}
}

func TestNormalizeImage(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                      "docker.io/library/busybox:latest",
		"busybox:1.36":                 "docker.io/library/busybox:1.36",
		"user/app":                     "docker.io/user/app:latest",
		"registry.k8s.io/pause:3.10":   "registry.k8s.io/pause:3.10",
		"localhost:5000/app":           "localhost:5000/app:latest",
		"localhost/app":                "localhost/app:latest",
		"quay.io/a/b@sha256:0123abcd":  "quay.io/a/b@sha256:0123abcd",
		"sha256:0123456789abcdef01234": "sha256:0123456789abcdef01234",
	} {
		if got := normalizeImage(in); got != want {
			t.Errorf("normalizeImage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolvConf(t *testing.T) {
	got := resolvConf(&runtimeapi.DNSConfig{Servers: []string{"10.0.0.10", "10.0.0.11"}, Searches: []string{"a.svc", "svc"}, Options: []string{"ndots:5", "edns0"}})
	want := "search a.svc svc\nnameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5 edns0\n"
	if got != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	if got := resolvConf(&runtimeapi.DNSConfig{}); got != "" {
		t.Errorf("empty DNS config: %q", got)
	}
}

// What the plugins get: the CNI_ARGS kubelet's runtimes send and the capability args.
func TestRuntimeConf(t *testing.T) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "prod", Uid: "u-1"},
		PortMappings: []*runtimeapi.PortMapping{
			{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 80, HostPort: 8080},
			{Protocol: runtimeapi.Protocol_UDP, ContainerPort: 53, HostPort: 5353, HostIp: "10.1.2.3"},
			{Protocol: runtimeapi.Protocol_SCTP, ContainerPort: 9, HostPort: 0}, // container port only: not mapped
		},
		DnsConfig:   &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}},
		Annotations: map[string]string{"k": "v"},
	}
	rt := podNetwork{id: "abc", netns: "/x/cni-abc", config: cfg}.runtimeConf("eth0")
	if rt.ContainerID != "abc" || rt.NetNS != "/x/cni-abc" || rt.IfName != "eth0" {
		t.Errorf("runtime conf: %+v", rt)
	}
	wantArgs := [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "prod"}, {"K8S_POD_NAME", "web"},
		{"K8S_POD_INFRA_CONTAINER_ID", "abc"}, {"K8S_POD_UID", "u-1"}}
	if b, w := mustJSON(rt.Args), mustJSON(wantArgs); b != w {
		t.Errorf("args %s, want %s", b, w)
	}
	wantCaps := `{"dns":{"options":[],"searches":[],"servers":["10.96.0.10"]},"io.kubernetes.cri.pod-annotations":{"k":"v"},` +
		`"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"},{"containerPort":53,"hostIP":"10.1.2.3","hostPort":5353,"protocol":"udp"}]}`
	if got := mustJSON(rt.CapabilityArgs); got != wantCaps {
		t.Errorf("capability args:\n%s\nwant:\n%s", got, wantCaps)
	}
	// Nothing optional: no capability args at all.
	rt = podNetwork{id: "abc", config: &runtimeapi.PodSandboxConfig{Metadata: cfg.Metadata}}.runtimeConf("eth0")
	if len(rt.CapabilityArgs) != 0 {
		t.Errorf("capability args without ports/dns/annotations: %v", rt.CapabilityArgs)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestPodIPs(t *testing.T) {
	ip := func(s string) *current.IPConfig {
		n, err := types.ParseCIDR(s)
		if err != nil {
			t.Fatal(err)
		}
		return &current.IPConfig{Address: *n}
	}
	res := &current.Result{IPs: []*current.IPConfig{ip("fd00::5/64"), ip("10.1.0.5/24"), ip("10.2.0.5/24")}}
	if got := strings.Join(podIPs(res), ","); got != "10.1.0.5,fd00::5,10.2.0.5" {
		t.Errorf("pod IPs %s", got)
	}
	if got := podIPs(&current.Result{IPs: []*current.IPConfig{ip("fd00::5/64")}}); len(got) != 1 || got[0] != "fd00::5" {
		t.Errorf("IPv6-only pod IPs %v", got)
	}
}

// The first file by name is the network, as containerd picks it; a broken first file is an
// error naming it (not skipped); .conf files are wrapped into a list.
func TestLoadFirstConf(t *testing.T) {
	write := func(dir, name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name    string
		files   map[string]string
		want    string // network name, or error fragment after "!"
		wantErr bool
	}{
		{"empty", nil, "no network config found", true},
		{"by name", map[string]string{"20-b.conflist": `{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}`,
			"10-a.conflist": `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}`}, "a", false},
		{"conf file", map[string]string{"10-a.conf": `{"cniVersion":"1.0.0","name":"single","type":"bridge"}`}, "single", false},
		{"other extensions ignored", map[string]string{"00-x.conflist.tmp": `garbage`, "10-a.json": `{"cniVersion":"1.0.0","name":"j","type":"bridge"}`}, "j", false},
		{"broken first", map[string]string{"05-bad.conflist": `{"name":"bad","plugins":[]}`,
			"10-a.conflist": `{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}`}, "05-bad.conflist", true},
		{"not JSON", map[string]string{"10-a.conflist": `{`}, "10-a.conflist", true},
		{"no type", map[string]string{"10-a.conf": `{"cniVersion":"1.0.0","name":"n"}`}, "10-a.conf: error parsing configuration: missing 'type'", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, b := range c.files {
				write(dir, n, b)
			}
			list, _, err := loadFirstConf(dir)
			if c.wantErr {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error %v, want one mentioning %q", err, c.want)
				}
				return
			}
			if err != nil || list.Name != c.want {
				t.Fatalf("network %v, %v; want %s", list, err, c.want)
			}
		})
	}
}

// The conf dir is reloaded when it changes, and only then.
func TestNetworkReload(t *testing.T) {
	dir := t.TempDir()
	c, err := newCNINet(dir, nil, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.network(); err == nil {
		t.Fatal("network found in an empty dir")
	}
	path := filepath.Join(dir, "10-a.conflist")
	if err := os.WriteFile(path, []byte(`{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	list, _, err := c.network()
	if err != nil || list.Name != "a" {
		t.Fatalf("after adding a config: %v %v", list, err)
	}
	if err := os.WriteFile(path, []byte(`{"cniVersion":"1.0.0","name":"renamed","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	list, _, err = c.network()
	if err != nil || list.Name != "renamed" {
		t.Fatalf("after changing the config: %v %v", list, err)
	}
}

func TestContainerEnv(t *testing.T) {
	cfg := &runtimeapi.ContainerConfig{Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("1")}, {Key: "PATH", Value: []byte("/bin")}, {Key: "A", Value: []byte("2")}}}
	got := strings.Join(containerEnv(cfg, &runtimeapi.PodSandboxConfig{Hostname: "h"}), " ")
	if got != "PATH=/bin HOSTNAME=h A=2" {
		t.Errorf("env %q", got)
	}
}

func TestAttachFrames(t *testing.T) {
	var b strings.Builder
	for _, f := range []struct {
		kind byte
		data string
	}{{frameStdout, "out"}, {frameStderr, ""}, {frameStdin, "in"}} {
		if err := writeFrame(&b, f.kind, []byte(f.data)); err != nil {
			t.Fatal(err)
		}
	}
	r := strings.NewReader(b.String())
	for _, want := range []string{"1:out", "2:", "0:in"} {
		k, d, err := readFrame(r)
		if err != nil || string(rune('0'+k))+":"+string(d) != want {
			t.Errorf("frame %d %q %v, want %s", k, d, err, want)
		}
	}
	if _, _, err := readFrame(strings.NewReader("\x01\xff\xff\xff\xff")); err == nil {
		t.Error("oversized frame accepted")
	}
}
