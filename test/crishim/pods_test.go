package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cni-suite/cni-suite/pkg/crishim"
)

// bridgeConflist is the suite's bridge + host-local + portmap network (as in
// deploy/examples), with host-local's state in the test's node data dir.
func bridgeConflist(extra string) string {
	return `{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"crishim-test","plugins":[
 {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"hairpinMode":true,
  "ipam":{"type":"host-local","dataDir":"{{DATADIR}}","ranges":[[{"subnet":"10.77.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":true}` + extra + `]}`
}

// Two pods on the bridge network: an HTTP server in one, reached from the other pod by its
// IP and from the node through its hostPort; the pod's hostname, DNS config and logs are
// what the CRI asked for; stop and remove leave nothing behind.
func TestTwoPodsHTTPAndHostPort(t *testing.T) {
	s := startShim(t, shimOpts{conflist: bridgeConflist("")})
	ctx := ctxT(t)

	st, err := s.rt.Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.GetStatus().GetConditions() {
		if !c.GetStatus() {
			t.Fatalf("condition %s not ready: %s %s", c.GetType(), c.GetReason(), c.GetMessage())
		}
	}

	server := s.runPod(t, podOpts{name: "server", hostPort: 30080, ctrPort: 8080})
	client := s.runPod(t, podOpts{name: "client"})
	if server.ip == "" || client.ip == "" || server.ip == client.ip {
		t.Fatalf("pod IPs: server %q client %q", server.ip, client.ip)
	}
	if !strings.HasPrefix(server.ip, "10.77.0.") {
		t.Fatalf("server IP %s is not from the conflist's range", server.ip)
	}
	bin := testBinary(t)
	srv := s.runContainer(t, server, "httpd", []string{bin, "__helper", "httpd", "8080"})
	cli := s.runContainer(t, client, "shell", []string{"sleep", "3600"}, "GREETING=hi there")

	url := fmt.Sprintf("http://%s:8080/", server.ip)
	waitFor(t, "pod-to-pod HTTP", func() error {
		out, stderr, err := s.rt.ExecSync(ctx, cli, []string{bin, "__helper", "get", url}, 10e9)
		if err != nil {
			return fmt.Errorf("%v: %s", err, stderr)
		}
		if string(out) != "hello from server\n" {
			return fmt.Errorf("body %q", out)
		}
		return nil
	})
	// Through the hostPort, from the node: its bridge address and localhost.
	gw := strings.TrimSuffix(server.ip, server.ip[strings.LastIndex(server.ip, "."):]) + ".1"
	for _, hostURL := range []string{"http://" + gw + ":30080/", "http://127.0.0.1:30080/"} {
		body, err := s.nodeGet(hostURL)
		if err != nil || body != "hello from server\n" {
			t.Errorf("GET %s from the node: %q, %v", hostURL, body, err)
		}
	}

	// The pod's own namespaces: hostname, resolv.conf, env, separate stdout/stderr, exit code.
	if got := s.execSync(t, cli, "hostname"); got != "client\n" {
		t.Errorf("hostname in pod: %q", got)
	}
	want := "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	if got := s.execSync(t, cli, "cat", "/etc/resolv.conf"); got != want {
		t.Errorf("resolv.conf in pod:\n%s\nwant:\n%s", got, want)
	}
	if got := s.execSync(t, cli, "cat", "/etc/hostname"); got != "client\n" {
		t.Errorf("/etc/hostname in pod: %q", got)
	}
	if got := s.execSync(t, cli, "sh", "-c", "echo $GREETING"); got != "hi there\n" {
		t.Errorf("env in pod: %q", got)
	}
	out, stderr, err := s.rt.ExecSync(ctx, cli, []string{"sh", "-c", "echo out; echo err >&2; exit 3"}, 10e9)
	if err == nil || string(out) != "out\n" || string(stderr) != "err\n" || !strings.Contains(err.Error(), "3") {
		t.Errorf("ExecSync exit 3: out %q err %q error %v", out, stderr, err)
	}
	ipOut := s.execSync(t, cli, "ip", "-o", "-4", "addr", "show", "eth0")
	if !strings.Contains(ipOut, client.ip+"/") {
		t.Errorf("eth0 in the client pod does not hold %s: %s", client.ip, ipOut)
	}

	// The server's log is in the CRI format.
	logFile := filepath.Join(server.cfg.LogDirectory, "httpd.log")
	waitFor(t, "container log", func() error {
		b, err := os.ReadFile(logFile)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), " stdout F listening on [::]:8080\n") {
			return fmt.Errorf("log %q", b)
		}
		return nil
	})

	cs, err := s.rt.ContainerStatus(ctx, srv, false)
	if err != nil || cs.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("server container status %v, %v", cs.GetStatus().GetState(), err)
	}
	if err := s.rt.StopContainer(ctx, srv, 10); err != nil {
		t.Fatal(err)
	}
	cs, _ = s.rt.ContainerStatus(ctx, srv, false)
	if cs.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || cs.GetStatus().GetExitCode() != 0 {
		t.Errorf("after SIGTERM: state %v exit %d", cs.GetStatus().GetState(), cs.GetStatus().GetExitCode())
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), " stdout F got SIGTERM, bye\n") {
		t.Errorf("log after stop: %q", b)
	}

	// The client pod's mount namespace was copied from the node's while the server's netns was
	// mounted there: removing the server must drop that copy too, or its netns would live on.
	vs, err := s.rt.PodSandboxStatus(ctx, client.id, true)
	if err != nil {
		t.Fatal(err)
	}
	clientMounts := fmt.Sprintf("/proc/%s/mountinfo", vs.GetInfo()["pid"])
	serverNetns := "cni-" + server.id[:32]
	if b, _ := os.ReadFile(clientMounts); !strings.Contains(string(b), serverNetns) {
		t.Fatalf("the client pod's mounts do not show the server's netns (test premise):\n%s", b)
	}
	s.removePod(t, server.id)
	if b, _ := os.ReadFile(clientMounts); strings.Contains(string(b), serverNetns) || len(b) == 0 {
		t.Errorf("the server's netns is still mounted in the client pod's mount namespace:\n%s", b)
	}
	s.removePod(t, client.id)
	// Stop and Remove of gone IDs are success.
	if err := s.rt.StopPodSandbox(ctx, server.id); err != nil {
		t.Errorf("second StopPodSandbox: %v", err)
	}
	if err := s.rt.RemovePodSandbox(ctx, server.id); err != nil {
		t.Errorf("second RemovePodSandbox: %v", err)
	}
	if err := s.rt.RemoveContainer(ctx, cli); err != nil {
		t.Errorf("RemoveContainer of a removed container: %v", err)
	}
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
	if body, err := s.nodeGet("http://127.0.0.1:30080/"); err == nil {
		t.Errorf("hostPort still answers after removal: %q", body)
	}
}

// A dual-stack network: the pod IP is the IPv4 address, the IPv6 one is an additional IP.
func TestDualStackPodIPs(t *testing.T) {
	conf := strings.Replace(bridgeConflist(""), `"ranges":[[{"subnet":"10.77.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}]`,
		`"ranges":[[{"subnet":"fd00:77::/64"}],[{"subnet":"10.77.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]`, 1)
	s := startShim(t, shimOpts{conflist: conf})
	p := s.runPod(t, podOpts{name: "dual"})
	st, err := s.rt.PodSandboxStatus(ctxT(t), p.id, false)
	if err != nil {
		t.Fatal(err)
	}
	n := st.GetStatus().GetNetwork()
	if !strings.HasPrefix(n.GetIp(), "10.77.0.") || len(n.GetAdditionalIps()) != 1 || !strings.HasPrefix(n.GetAdditionalIps()[0].GetIp(), "fd00:77::") {
		t.Errorf("pod IPs: %q + %v", n.GetIp(), n.GetAdditionalIps())
	}
	s.removePod(t, p.id)
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

// `crishim teardown` (what make demo runs on exit) removes every pod of a state dir through
// the CNI, with the shim down, and leaves nothing behind.
func TestTeardownCommand(t *testing.T) {
	s := startShim(t, shimOpts{conflist: bridgeConflist("")})
	p := s.runPod(t, podOpts{name: "a", hostPort: 30082, ctrPort: 80, pidPod: true})
	s.runContainer(t, p, "c", []string{"sleep", "3600"})
	q := s.runPod(t, podOpts{name: "b"})
	s.runContainer(t, q, "c", []string{"sleep", "3600"})
	s.kill()
	cmd := exec.Command(s.bin, append([]string{"teardown"}, s.args()...)...)
	var out []byte
	err := s.node.Do(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		t.Fatalf("crishim teardown: %v\n%s", err, out)
	}
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
	if mps, _ := crishim.MountsUnder(s.netnsDir); len(mps) != 0 {
		t.Errorf("mounts left under the netns dir: %v", mps)
	}
}
