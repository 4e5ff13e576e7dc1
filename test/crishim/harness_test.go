package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"github.com/cni-suite/cni-suite/pkg/crishim"
	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// The test binary doubles as the containers' programs (`<test binary> __helper <role> ...`)
// and as a recording CNI plugin (when invoked through a symlink named cnis-recorder), so that
// the tests need nothing but the binaries under test.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == recorderName {
		os.Exit(recorderMain())
	}
	if len(os.Args) > 2 && os.Args[1] == "__helper" {
		os.Exit(helperMain(os.Args[2], os.Args[3:]))
	}
	code := m.Run()
	if shimBin != "" {
		os.RemoveAll(filepath.Dir(shimBin))
	}
	os.Exit(code)
}

func helperMain(role string, args []string) int {
	switch role {
	case "httpd": // httpd <port>: answers "hello from <hostname>"
		host, _ := os.Hostname()
		ln, err := net.Listen("tcp", ":"+args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Printf("listening on %s\n", ln.Addr())
		go func() {
			c := make(chan os.Signal, 1)
			signal.Notify(c, syscall.SIGTERM)
			<-c
			fmt.Println("got SIGTERM, bye")
			os.Exit(0)
		}()
		_ = http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", host)
		}))
		return 1
	case "get": // get <url>: prints the body
		c := &http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(args[0])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer resp.Body.Close()
		_, _ = io.Copy(os.Stdout, resp.Body)
		return 0
	case "ignore-term": // sleeps, ignoring SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		time.Sleep(time.Hour)
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown helper role", role)
	return 2
}

var (
	shimOnce sync.Once
	shimBin  string
	shimErr  error
)

// shimBinary returns bin/crishim when make built it ($CNI_SUITE_BIN), else builds it once.
func shimBinary(t *testing.T) string {
	t.Helper()
	if d := os.Getenv(testenv.BinEnv); d != "" {
		if p := filepath.Join(d, "crishim"); fileExists(p) {
			return p
		}
	}
	shimOnce.Do(func() {
		dir, err := os.MkdirTemp("", "crishim-bin-")
		if err != nil {
			shimErr = err
			return
		}
		shimBin = filepath.Join(dir, "crishim")
		cmd := exec.Command("go", "build", "-o", shimBin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			shimErr = fmt.Errorf("go build crishim: %v\n%s", err, out)
		}
	})
	if shimErr != nil {
		t.Fatal(shimErr)
	}
	return shimBin
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// shim is one crishim process serving a throwaway node.
type shim struct {
	t                                   *testing.T
	node                                *testenv.Node
	bin                                 string
	stateDir, netnsDir, confDir, logDir string
	dataDir                             string // host-local's dataDir in the test conflist
	sock                                string
	binDirs                             []string
	logPath                             string
	cmd                                 *exec.Cmd
	waitErr                             chan error
	rt                                  internalapi.RuntimeService
	img                                 internalapi.ImageManagerService
}

type shimOpts struct {
	binDirs  []string // default: the reference plugins v1.9.1
	conflist string   // written to the conf dir when set ({{DATADIR}} and {{SUBNET}} are filled in)
}

// startShim makes a node netns and temp dirs, starts crishim in the node, and connects the
// Kubernetes CRI client to it. Cleanup kills the shim and everything it started, and
// unmounts what it mounted, also when the test fails.
func startShim(t *testing.T, o shimOpts) *shim {
	t.Helper()
	testenv.RequireRoot(t)
	s := &shim{t: t, node: testenv.NewNode(t), bin: shimBinary(t)}
	s.stateDir, s.netnsDir, s.confDir, s.logDir = t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	s.dataDir = s.node.DataDir
	sockDir, err := os.MkdirTemp("", "crishim-sock-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	s.sock = filepath.Join(sockDir, "cri.sock")
	s.logPath = filepath.Join(t.TempDir(), "crishim.log")
	s.binDirs = o.binDirs
	if len(s.binDirs) == 0 {
		s.binDirs = []string{testenv.RefPluginDir(t, "v1.9.1")}
	}
	if o.conflist != "" {
		s.writeConf("10-test.conflist", o.conflist)
	}
	t.Cleanup(func() {
		s.stop()
		s.sweep()
		os.RemoveAll(sockDir)
	})
	s.start()
	return s
}

func (s *shim) writeConf(name, conf string) {
	conf = strings.ReplaceAll(conf, "{{DATADIR}}", s.dataDir)
	if err := os.WriteFile(filepath.Join(s.confDir, name), []byte(conf), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func (s *shim) args() []string {
	return []string{"--listen", s.sock, "--state-dir", s.stateDir, "--netns-dir", s.netnsDir,
		"--cni-conf-dir", s.confDir, "--cni-bin-dir", strings.Join(s.binDirs, ":")}
}

// start runs the shim inside the node netns and waits until the CRI client connects.
func (s *shim) start() {
	t := s.t
	t.Helper()
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	_ = os.Remove(s.sock) // a killed shim leaves its socket behind
	s.cmd = exec.Command(s.bin, s.args()...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.node.Do(func() error { return s.cmd.Start() }); err != nil {
		t.Fatalf("start crishim: %v", err)
	}
	s.waitErr = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(s.cmd, s.waitErr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for !fileExists(s.sock) {
		select {
		case err := <-s.waitErr:
			t.Fatalf("crishim exited: %v\n%s", err, s.log())
		case <-ctx.Done():
			t.Fatalf("crishim did not create its socket\n%s", s.log())
		case <-time.After(20 * time.Millisecond):
		}
	}
	ep := "unix://" + s.sock
	for {
		if s.rt, err = remote.NewRemoteRuntimeService(ctx, ep, 3*time.Minute, nil, false); err == nil {
			break
		}
		select {
		case werr := <-s.waitErr:
			t.Fatalf("crishim exited: %v (client: %v)", werr, err)
		case <-ctx.Done():
			t.Fatalf("CRI runtime client: %v", err)
		case <-time.After(100 * time.Millisecond):
			t.Logf("CRI runtime client: %v; retrying", err)
		}
	}
	if s.img, err = remote.NewRemoteImageService(ctx, ep, time.Minute, nil, false); err != nil {
		t.Fatalf("CRI image client: %v", err)
	}
}

func (s *shim) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

// kill ends the shim at once (SIGKILL), as a crash would; pods keep running.
func (s *shim) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	if s.rt != nil {
		_ = s.rt.Close(context.Background())
	}
	_ = s.cmd.Process.Kill()
	<-s.waitErr
	s.cmd = nil
}

func (s *shim) restart() {
	s.kill()
	s.start()
}

// stop ends the shim; on a failed test its log is shown.
func (s *shim) stop() {
	s.kill()
	if s.t.Failed() || os.Getenv("CRISHIM_TEST_SHOWLOG") == "1" {
		s.t.Logf("crishim log:\n%s", s.log())
	}
}

// sweep kills every process the shim started (they carry its state dir as an argument) and
// unmounts everything under its dirs: nothing outlives the test.
func (s *shim) sweep() {
	for i := 0; i < 3; i++ {
		pids := crishim.ProcessesWithArg(s.stateDir)
		if len(pids) == 0 {
			break
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, d := range []string{s.netnsDir, s.stateDir, s.logDir} {
		if err := crishim.UnmountAll(d); err != nil {
			s.t.Errorf("unmount under %s: %v", d, err)
		}
	}
}

// ---- CRI helpers ----

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

type podOpts struct {
	name     string
	hostPort int32
	ctrPort  int32
	hostNet  bool
	pidPod   bool
}

func (s *shim) podConfig(o podOpts) *runtimeapi.PodSandboxConfig {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: o.name, Namespace: "default", Uid: "uid-" + o.name},
		Hostname:     o.name,
		LogDirectory: filepath.Join(s.logDir, o.name),
		DnsConfig:    &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}},
		Labels:       map[string]string{"app": o.name, "suite": "crishim"},
		Annotations:  map[string]string{"test": "yes"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
	if o.pidPod {
		cfg.Linux.SecurityContext.NamespaceOptions.Pid = runtimeapi.NamespaceMode_POD
	}
	if o.hostNet {
		cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
	}
	if o.hostPort != 0 {
		cfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: o.ctrPort, HostPort: o.hostPort}}
	}
	return cfg
}

type pod struct {
	id  string
	cfg *runtimeapi.PodSandboxConfig
	ip  string
}

func (s *shim) runPod(t *testing.T, o podOpts) *pod {
	t.Helper()
	cfg := s.podConfig(o)
	id, err := s.rt.RunPodSandbox(ctxT(t), cfg, "")
	if err != nil {
		t.Fatalf("RunPodSandbox %s: %v", o.name, err)
	}
	st, err := s.rt.PodSandboxStatus(ctxT(t), id, false)
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	return &pod{id: id, cfg: cfg, ip: st.GetStatus().GetNetwork().GetIp()}
}

func testBinary(t *testing.T) string {
	p, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runContainer creates and starts a container running the given command.
func (s *shim) runContainer(t *testing.T, p *pod, name string, cmd []string, env ...string) string {
	t.Helper()
	cfg := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: "busybox"},
		Command:  cmd,
		LogPath:  name + ".log",
		Labels:   map[string]string{"container": name},
	}
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		cfg.Envs = append(cfg.Envs, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	id, err := s.rt.CreateContainer(ctxT(t), p.id, cfg, p.cfg)
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", name, err)
	}
	if err := s.rt.StartContainer(ctxT(t), id); err != nil {
		t.Fatalf("StartContainer %s: %v", name, err)
	}
	return id
}

func (s *shim) execSync(t *testing.T, cid string, cmd ...string) string {
	t.Helper()
	out, stderr, err := s.rt.ExecSync(ctxT(t), cid, cmd, 20*time.Second)
	if err != nil {
		t.Fatalf("ExecSync %v: %v\nstdout: %s\nstderr: %s", cmd, err, out, stderr)
	}
	return string(out)
}

func (s *shim) removePod(t *testing.T, id string) {
	t.Helper()
	if err := s.rt.StopPodSandbox(ctxT(t), id); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if err := s.rt.RemovePodSandbox(ctxT(t), id); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
}

// nodeGet makes an HTTP GET from inside the node netns.
func (s *shim) nodeGet(url string) (string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := s.node.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}, DisableKeepAlives: true}
	cl := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitFor polls cond (bounded) — for things that become true asynchronously, like a server
// starting to listen.
func waitFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ---- leftovers ----

// leftovers lists what the shim should have removed: pinned netns, veths on the node,
// reservations, pod NAT rules and helper processes.
func (s *shim) leftovers(t *testing.T) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(s.netnsDir)
	for _, e := range ents {
		out = append(out, "netns file "+e.Name())
	}
	mps, _ := crishim.MountsUnder(s.netnsDir)
	for _, mp := range mps {
		if mp != s.netnsDir {
			out = append(out, "mount "+mp)
		}
	}
	links := s.node.MustExec(t, "ip", "-o", "link", "show")
	for _, l := range strings.Split(strings.TrimSpace(links), "\n") {
		if strings.Contains(l, "veth") {
			out = append(out, "link "+l)
		}
	}
	resv, _ := filepath.Glob(filepath.Join(s.dataDir, "*", "*"))
	for _, r := range resv {
		if b := filepath.Base(r); b != "lock" && !strings.HasPrefix(b, "last_reserved_ip.") {
			out = append(out, "reservation "+r)
		}
	}
	nat := s.node.MustExec(t, "iptables-save", "-t", "nat")
	for _, l := range strings.Split(nat, "\n") {
		if strings.HasPrefix(l, "-A") && (strings.Contains(l, "CNI-DN-") || strings.Contains(l, "id: \"")) {
			out = append(out, "nat rule "+l)
		}
	}
	for _, pid := range crishim.ProcessesWithArg(s.stateDir) {
		args, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !bytes.Contains(args, []byte("--listen")) {
			out = append(out, fmt.Sprintf("process %d %q", pid, bytes.ReplaceAll(args, []byte{0}, []byte{' '})))
		}
	}
	return out
}

// ---- recording CNI plugin ----

const recorderName = "cnis-recorder"

// recorderDir returns a plugin dir holding cnis-recorder (a symlink to this test binary).
func recorderDir(t *testing.T) string {
	d := t.TempDir()
	if err := os.Symlink(testBinary(t), filepath.Join(d, recorderName)); err != nil {
		t.Fatal(err)
	}
	return d
}

// recorderMain is a chained CNI plugin that records every call (verb, container, stdin) in
// its config's logFile, passes prevResult through, and fails STATUS while failStatusFile exists.
func recorderMain() int {
	stdin, _ := io.ReadAll(os.Stdin)
	cmd := os.Getenv("CNI_COMMAND")
	if cmd == "VERSION" {
		fmt.Print(`{"cniVersion":"1.1.0","supportedVersions":["0.3.1","0.4.0","1.0.0","1.1.0"]}`)
		return 0
	}
	var conf struct {
		CNIVersion     string          `json:"cniVersion"`
		LogFile        string          `json:"logFile"`
		FailStatusFile string          `json:"failStatusFile"`
		PrevResult     json.RawMessage `json:"prevResult"`
	}
	if err := json.Unmarshal(stdin, &conf); err != nil {
		fmt.Printf(`{"cniVersion":"1.0.0","code":6,"msg":"decode config: %v"}`, err)
		return 1
	}
	if conf.LogFile != "" {
		rec, _ := json.Marshal(map[string]any{"cmd": cmd, "cid": os.Getenv("CNI_CONTAINERID"), "ifname": os.Getenv("CNI_IFNAME"),
			"args": os.Getenv("CNI_ARGS"), "netns": os.Getenv("CNI_NETNS"), "stdin": json.RawMessage(stdin)})
		f, err := os.OpenFile(conf.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err == nil {
			_, _ = f.Write(append(rec, '\n'))
			f.Close()
		}
	}
	switch cmd {
	case "ADD":
		if len(conf.PrevResult) > 0 {
			var m map[string]any
			_ = json.Unmarshal(conf.PrevResult, &m)
			m["cniVersion"] = conf.CNIVersion
			b, _ := json.Marshal(m)
			os.Stdout.Write(b)
		} else {
			fmt.Printf(`{"cniVersion":%q}`, conf.CNIVersion)
		}
	case "STATUS":
		if conf.FailStatusFile != "" && fileExists(conf.FailStatusFile) {
			fmt.Printf(`{"cniVersion":%q,"code":50,"msg":"recorder: told to fail STATUS"}`, conf.CNIVersion)
			return 1
		}
	}
	return 0
}

type recorded struct {
	Cmd    string          `json:"cmd"`
	CID    string          `json:"cid"`
	IfName string          `json:"ifname"`
	Args   string          `json:"args"`
	Netns  string          `json:"netns"`
	Stdin  json.RawMessage `json:"stdin"`
}

func readRecords(t *testing.T, path string) []recorded {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []recorded
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var r recorded
		if err := json.Unmarshal(l, &r); err != nil {
			t.Fatalf("recorder log line %q: %v", l, err)
		}
		out = append(out, r)
	}
	return out
}

func testenvRef(t *testing.T) string { return testenv.RefPluginDir(t, "v1.9.1") }
