package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

// logBuf collects log lines from concurrent goroutines.
type logBuf struct {
	mu    sync.Mutex
	lines []string
}

func (l *logBuf) logf(f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(f, a...))
}

func (l *logBuf) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// eventually polls cond for up to 20 s (a bound, not a timing goal).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func node(name string, cidrs ...string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Spec.PodCIDRs = cidrs
	if len(cidrs) > 0 {
		n.Spec.PodCIDR = cidrs[0]
	}
	return n
}

func render(t *testing.T, p conflist.NetParams, cidrs ...string) []byte {
	t.Helper()
	p.PodCIDRs = prefixes(cidrs...)
	b, err := conflist.Render(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The Node path against client-go's fake clientset: no file and a clear log line while the Node
// has no podCIDR; the config once it gets one; a re-render when it changes; a deleted file put
// back at the next resync; a clean return when cancelled.
func TestRunConfigFollowsNodePodCIDRs(t *testing.T) {
	client := fake.NewClientset(node("n1"), node("n2", "10.9.0.0/24"))
	dir := t.TempDir()
	file := filepath.Join(dir, conflist.ConfFileName(conflist.DefaultNetworkName))
	np := conflist.NetParams{MTU: 1400, DataDir: "/run/test-ipam"}
	logs := &logBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- RunConfig(ctx, ConfigOptions{ConfDir: dir, Net: np, Client: client, NodeName: "n1",
			Resync: 300 * time.Millisecond, Logf: logs.logf})
	}()

	eventually(t, "the no-podCIDR log line", func() bool { return logs.has("node n1 has no pod CIDR yet") })
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a config was written for a node without podCIDR (or from another node's): %v", err)
	}
	if strings.Count(logs.String(), "has no pod CIDR yet") != 1 {
		t.Errorf("the waiting line should be logged once, not at every resync:\n%s", logs)
	}

	n1 := node("n1", "10.244.5.0/24", "fd00:5::/64")
	if _, err := client.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := render(t, np, "10.244.5.0/24", "fd00:5::/64")
	eventually(t, "the config for the node's CIDRs", func() bool { b, _ := os.ReadFile(file); return bytes.Equal(b, want) })

	n1.Spec.PodCIDRs = []string{"10.244.6.0/24"}
	if _, err := client.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	want = render(t, np, "10.244.6.0/24")
	eventually(t, "the re-rendered config", func() bool { b, _ := os.ReadFile(file); return bytes.Equal(b, want) })

	os.Remove(file)
	eventually(t, "the deleted config put back", func() bool { b, _ := os.ReadFile(file); return bytes.Equal(b, want) })

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("RunConfig: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("RunConfig did not return after cancel")
	}
	if tf := tempFiles(t, dir); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
	t.Logf("log:\n%s", logs)
}

func TestRunConfigOnceAndFlags(t *testing.T) {
	dir := t.TempDir()
	// From the Node, already allocated; spec.podCIDR alone (older clusters) is enough.
	n := node("n1")
	n.Spec.PodCIDR = "10.244.8.0/24"
	writeFile(t, filepath.Join(dir, "05-old.conflist"), []byte("{}"), 0o644) // sorts before ours
	logs := &logBuf{}
	err := RunConfig(context.Background(), ConfigOptions{ConfDir: dir, Client: fake.NewClientset(n), NodeName: "n1", Once: true, Logf: logs.logf})
	if err != nil {
		t.Fatal(err)
	}
	if !logs.has("WARNING: 05-old.conflist sorts before 10-cni-suite.conflist") {
		t.Errorf("no warning about the config that shadows ours:\n%s", logs)
	}
	os.Remove(filepath.Join(dir, "05-old.conflist"))
	if b := mustRead(t, filepath.Join(dir, conflist.ConfFileName(conflist.DefaultNetworkName))); !bytes.Equal(b, render(t, conflist.NetParams{}, "10.244.8.0/24")) {
		t.Errorf("config from spec.podCIDR:\n%s", b)
	}
	// From flags, with the MTU detector consulted and an IPAM dir created.
	dataOnHost := filepath.Join(t.TempDir(), "run/cni-suite/networks")
	err = RunConfig(context.Background(), ConfigOptions{ConfDir: dir, PodCIDRs: []string{"10.244.9.0/24"}, Once: true,
		DetectMTU: func() (int, string, error) { return 8950, "eth9", nil }, DataDirOnHost: dataOnHost, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if b := mustRead(t, filepath.Join(dir, conflist.ConfFileName(conflist.DefaultNetworkName))); !bytes.Equal(b, render(t, conflist.NetParams{MTU: 8950}, "10.244.9.0/24")) {
		t.Errorf("config from flags:\n%s", b)
	}
	if fi, err := os.Stat(dataOnHost); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("IPAM data dir: %v %v", fi, err)
	}
	// Bad flags fail at once, and write nothing.
	dir2 := t.TempDir()
	for _, bad := range [][]string{{"10.1.0.0/24", "10.2.0.0/24"}, {"not-a-cidr"}} {
		if err := RunConfig(context.Background(), ConfigOptions{ConfDir: dir2, PodCIDRs: bad, Once: true}); err == nil {
			t.Errorf("pod CIDRs %v accepted", bad)
		}
	}
	if err := RunConfig(context.Background(), ConfigOptions{ConfDir: dir2, Client: fake.NewClientset(), Once: true}); err == nil || !strings.Contains(err.Error(), "NODE_NAME") {
		t.Errorf("no node name: %v", err)
	}
	if entries, _ := os.ReadDir(dir2); len(entries) != 0 {
		t.Errorf("failed runs wrote %v", entries)
	}
}

// A stand-in API server over TLS that serves one Node to list and watch, the way client-go's
// informer asks (a streaming watch-list first, else list then watch); it records the requests.
type fakeAPIServer struct {
	*httptest.Server
	token string
	node  *corev1.Node
	mu    sync.Mutex
	reqs  []string
}

func newFakeAPIServer(t *testing.T, token string, n *corev1.Node) *fakeAPIServer {
	s := &fakeAPIServer{token: token, node: n}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *fakeAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	s.mu.Unlock()
	if r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Unauthorized","code":401}`, http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/nodes" || q.Get("fieldSelector") != "metadata.name="+s.node.Name {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}`, http.StatusForbidden)
		return
	}
	n := s.node.DeepCopy()
	n.APIVersion, n.Kind, n.ResourceVersion = "v1", "Node", "10"
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		json.NewEncoder(w).Encode(map[string]any{"kind": "NodeList", "apiVersion": "v1",
			"metadata": map[string]any{"resourceVersion": "10"}, "items": []any{n}})
		return
	}
	enc := json.NewEncoder(w)
	if q.Get("sendInitialEvents") == "true" {
		enc.Encode(map[string]any{"type": "ADDED", "object": n})
		enc.Encode(map[string]any{"type": "BOOKMARK", "object": map[string]any{"kind": "Node", "apiVersion": "v1",
			"metadata": map[string]any{"resourceVersion": "10", "annotations": map[string]string{"k8s.io/initial-events-end": "true"}}}})
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done()
}

func (s *fakeAPIServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

// serviceAccount writes a token and the server's CA as a pod's service account files.
func serviceAccount(t *testing.T, s *fakeAPIServer) (tokenFile, caFile string) {
	d := t.TempDir()
	tokenFile, caFile = filepath.Join(d, "token"), filepath.Join(d, "ca.crt")
	writeFile(t, tokenFile, []byte(s.token+"\n"), 0o600)
	writeFile(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o644)
	return tokenFile, caFile
}

// The whole config command over HTTPS, the API server address given directly: the kubernetes
// Service address from the environment leads nowhere (a closed port on loopback, as an unrouted
// ClusterIP would), the override is used, with the service account's token and CA.
func TestConfigCommandAPIServerOverride(t *testing.T) {
	srv := newFakeAPIServer(t, "tok-123", node("n1", "10.244.11.0/24"))
	tokenFile, caFile := serviceAccount(t, srv)
	dir := t.TempDir()
	env := map[string]string{"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1",
		EnvNodeName: "n1", EnvAPIServer: srv.URL}
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Main(ctx, []string{"config", "--conf-dir", dir, "--token-file", tokenFile, "--ca-file", caFile,
		"--mtu", "1400", "--once"}, func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	if b := mustRead(t, filepath.Join(dir, conflist.ConfFileName(conflist.DefaultNetworkName))); !bytes.Equal(b, render(t, conflist.NetParams{MTU: 1400}, "10.244.11.0/24")) {
		t.Errorf("config:\n%s", b)
	}
	if !strings.Contains(stderr.String(), "API server "+srv.URL) {
		t.Errorf("log does not name the API server used:\n%s", stderr.String())
	}
	// Only list/watch of this one node were asked for (the RBAC grants no more).
	reqs := srv.requests()
	if len(reqs) == 0 {
		t.Fatal("no request reached the API server")
	}
	for _, r := range reqs {
		u, _ := url.Parse(strings.TrimPrefix(r, "GET "))
		if !strings.HasPrefix(r, "GET /api/v1/nodes?") || u.Query().Get("fieldSelector") != "metadata.name=n1" {
			t.Errorf("unexpected request %s", r)
		}
	}
	t.Logf("requests: %v", reqs)
}

// Without the override, the in-cluster address (KUBERNETES_SERVICE_HOST/PORT) is used.
func TestConfigCommandInClusterAddress(t *testing.T) {
	srv := newFakeAPIServer(t, "tok-456", node("n2", "fd00:12::/64"))
	tokenFile, caFile := serviceAccount(t, srv)
	u, _ := url.Parse(srv.URL)
	dir := t.TempDir()
	env := map[string]string{"KUBERNETES_SERVICE_HOST": u.Hostname(), "KUBERNETES_SERVICE_PORT": u.Port()}
	var stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := Main(ctx, []string{"config", "--conf-dir", dir, "--node-name", "n2", "--token-file", tokenFile, "--ca-file", caFile,
		"--mtu", "1500", "--once"}, func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr.String())
	}
	if b := mustRead(t, filepath.Join(dir, conflist.ConfFileName(conflist.DefaultNetworkName))); !bytes.Equal(b, render(t, conflist.NetParams{MTU: 1500}, "fd00:12::/64")) {
		t.Errorf("config:\n%s", b)
	}
}

func TestRESTConfig(t *testing.T) {
	d := t.TempDir()
	tok, ca := filepath.Join(d, "token"), filepath.Join(d, "ca")
	writeFile(t, tok, []byte("abc\n"), 0o600)
	writeFile(t, ca, []byte("x"), 0o600)
	inPod := func(k string) string {
		return map[string]string{"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}[k]
	}
	none := func(string) string { return "" }
	cases := []struct {
		name     string
		o        KubeOptions
		env      func(string) string
		wantHost string
		wantErr  string
	}{
		{"service address", KubeOptions{TokenFile: tok, CAFile: ca}, inPod, "https://10.96.0.1:443", ""},
		{"override wins", KubeOptions{APIServer: "https://192.0.2.10:6443", TokenFile: tok, CAFile: ca}, inPod, "https://192.0.2.10:6443", ""},
		{"override without scheme", KubeOptions{APIServer: "127.0.0.1:6443", TokenFile: tok, CAFile: ca}, none, "https://127.0.0.1:6443", ""},
		{"ipv6 service", KubeOptions{TokenFile: tok, CAFile: ca}, func(k string) string {
			return map[string]string{"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}[k]
		}, "https://[fd00::1]:443", ""},
		{"not in a pod", KubeOptions{TokenFile: tok, CAFile: ca}, none, "", "--api-server"},
		{"bad override", KubeOptions{APIServer: "ftp://x", TokenFile: tok, CAFile: ca}, none, "", "api server"},
		{"no token", KubeOptions{TokenFile: filepath.Join(d, "missing"), CAFile: ca}, inPod, "", "token"},
		{"no CA", KubeOptions{TokenFile: tok, CAFile: filepath.Join(d, "missing")}, inPod, "", "CA"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := RESTConfig(c.o, c.env)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != c.wantHost || cfg.BearerToken != "abc" || cfg.BearerTokenFile != tok || cfg.TLSClientConfig.CAFile != ca {
				t.Errorf("config %+v", cfg)
			}
		})
	}
	// A kubeconfig, with the override replacing its server.
	kc := filepath.Join(d, "kubeconfig")
	writeFile(t, kc, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://10.96.0.1:443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`), 0o600)
	cfg, err := RESTConfig(KubeOptions{Kubeconfig: kc, APIServer: "127.0.0.1:6443"}, none)
	if err != nil || cfg.Host != "https://127.0.0.1:6443" {
		t.Errorf("kubeconfig with override: %v %v", cfg, err)
	}
}

// With --bin-dir, no config points at plugins that are not there: it waits for the init
// container's binaries, and after an uninstall took them away it does not put the config back.
func TestRunConfigWaitsForBinaries(t *testing.T) {
	dir, bin := t.TempDir(), t.TempDir()
	file := filepath.Join(dir, conflist.ConfFileName(conflist.DefaultNetworkName))
	logs := &logBuf{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- RunConfig(ctx, ConfigOptions{ConfDir: dir, BinDir: bin, PodCIDRs: []string{"10.244.4.0/24"},
			Resync: 100 * time.Millisecond, Logf: logs.logf})
	}()
	eventually(t, "the waiting-for-binaries line", func() bool { return logs.has("bridge, host-local, portmap are not in") })
	writeFile(t, filepath.Join(bin, "bridge"), []byte("x"), 0o755)
	writeFile(t, filepath.Join(bin, "host-local"), []byte("x"), 0o755)
	writeFile(t, filepath.Join(bin, "portmap"), []byte("x"), 0o644) // not executable: not good enough
	eventually(t, "the narrower waiting line", func() bool { return logs.has("plugin binaries portmap are not in") })
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("config written before its plugins: %v", err)
	}
	os.Chmod(filepath.Join(bin, "portmap"), 0o755)
	eventually(t, "the config", func() bool { _, err := os.Stat(file); return err == nil && logs.has("wrote ") })
	// An uninstall: config first, then binaries. The running loop does not write it back.
	os.Remove(file)
	os.Remove(filepath.Join(bin, "bridge"))
	n := strings.Count(logs.String(), "wrote ")
	eventually(t, "the loop noticing", func() bool { return strings.Count(logs.String(), "plugin binaries bridge are not in") > 0 })
	time.Sleep(300 * time.Millisecond) // a few resyncs
	if _, err := os.Stat(file); !errors.Is(err, fs.ErrNotExist) || strings.Count(logs.String(), "wrote ") != n {
		t.Errorf("config put back with its plugins gone: %v\n%s", err, logs)
	}
	cancel()
	<-done
}
