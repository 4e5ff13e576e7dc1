package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// crictl runs crictl inside the node netns (where the shim's streaming server listens), with
// optional stdin, and returns stdout, stderr and the exit code.
func (s *shim) crictl(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	bin := testenv.Crictl(t)
	conf := filepath.Join(s.stateDir, "..", "crictl.yaml")
	if !fileExists(conf) {
		body := fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", s.sock, s.sock)
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	full := append([]string{"netns", "exec", s.node.Name, bin, "--config", conf}, args...)
	cmd := exec.Command("ip", full...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("crictl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func (s *shim) mustCrictl(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := s.crictl(t, "", args...)
	if code != 0 {
		t.Fatalf("crictl %v: exit %d\n%s%s", args, code, out, errs)
	}
	return strings.TrimSpace(out)
}

func writeJSONFile(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "x.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// crictl, the CRI's own command-line client, drives a pod end to end: runp/create/start,
// exec through the streaming server (without -s) with stdin and exit codes, attach,
// port-forward, logs, inspect and removal.
func TestCrictl(t *testing.T) {
	s := startShim(t, shimOpts{conflist: bridgeConflist("")})
	podJSON := writeJSONFile(t, map[string]any{
		"metadata":      map[string]any{"name": "crictl-pod", "namespace": "default", "uid": "uid-crictl"},
		"hostname":      "crictl-pod",
		"log_directory": filepath.Join(s.logDir, "crictl-pod"),
		"port_mappings": []map[string]any{{"protocol": 0, "container_port": 8080, "host_port": 30081}},
	})
	bin := testBinary(t)
	httpdJSON := writeJSONFile(t, map[string]any{
		"metadata": map[string]any{"name": "httpd"}, "image": map[string]any{"image": "busybox"},
		"command": []string{bin, "__helper", "httpd", "8080"}, "log_path": "httpd.log",
	})
	pod := s.mustCrictl(t, "runp", podJSON)
	ctr := s.mustCrictl(t, "create", pod, httpdJSON, podJSON)
	s.mustCrictl(t, "start", ctr)

	if out := s.mustCrictl(t, "pods", "--name", "crictl-pod", "-q"); out != pod {
		t.Errorf("crictl pods: %q, want %s", out, pod)
	}
	ip := s.mustCrictl(t, "inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod)
	if !strings.HasPrefix(ip, "10.77.0.") {
		t.Errorf("crictl inspectp IP %q", ip)
	}
	if out := s.mustCrictl(t, "ps", "-q", "--pod", pod, "--state", "running"); out != ctr {
		t.Errorf("crictl ps: %q, want %s", out, ctr)
	}

	// exec (streaming): output, stderr, exit code, stdin.
	out, errs, code := s.crictl(t, "", "exec", ctr, "sh", "-c", "hostname; echo oops >&2; exit 4")
	// (crictl itself exits 1 and reports the command's code.)
	if out != "crictl-pod\n" || !strings.Contains(errs, "oops") || code == 0 || !strings.Contains(errs, "exit code 4") {
		t.Errorf("crictl exec: out %q err %q exit %d", out, errs, code)
	}
	out, errs, code = s.crictl(t, "piped input\n", "exec", "-i", ctr, "cat")
	if out != "piped input\n" || code != 0 {
		t.Errorf("crictl exec -i cat: out %q err %q exit %d", out, errs, code)
	}
	// exec -t: a terminal in the container (script gives crictl one of its own).
	if _, err := exec.LookPath("script"); err == nil {
		line := fmt.Sprintf("%s --runtime-endpoint unix://%s exec -it %s sh -c 'tty; stty size'", testenv.Crictl(t), s.sock, ctr)
		out, err := exec.Command("ip", "netns", "exec", s.node.Name, "script", "-qec", line, "/dev/null").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "/dev/pts/") {
			t.Errorf("crictl exec -it tty: %v\n%s", err, out)
		}
	}
	// exec -s (ExecSync) too.
	if out := s.mustCrictl(t, "exec", "-s", ctr, "echo", "sync"); out != "sync" {
		t.Errorf("crictl exec -s: %q", out)
	}

	// port-forward: a local port in the node netns to 8080 inside the pod.
	pf := exec.Command("ip", "netns", "exec", s.node.Name, testenv.Crictl(t), "--runtime-endpoint", "unix://"+s.sock,
		"port-forward", pod, "18080:8080")
	var pfOut bytes.Buffer
	pf.Stdout, pf.Stderr = &pfOut, &pfOut
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pf.Process.Kill(); _ = pf.Wait() })
	waitFor(t, "port-forward", func() error {
		body, err := s.nodeGet("http://127.0.0.1:18080/")
		if err != nil {
			return fmt.Errorf("%v (crictl: %s)", err, pfOut.String())
		}
		if body != "hello from crictl-pod\n" {
			return fmt.Errorf("body %q", body)
		}
		return nil
	})
	if body, err := s.nodeGet("http://127.0.0.1:30081/"); err != nil || body != "hello from crictl-pod\n" {
		t.Errorf("hostPort: %q %v", body, err)
	}

	// logs: what the server printed.
	if out := s.mustCrictl(t, "logs", ctr); !strings.Contains(out, "listening on [::]:8080") {
		t.Errorf("crictl logs: %q", out)
	}

	// attach: output of a container from the moment of attaching until it exits.
	talkerJSON := writeJSONFile(t, map[string]any{
		"metadata": map[string]any{"name": "talker"}, "image": map[string]any{"image": "busybox"},
		"command": []string{"sh", "-c", "sleep 1; for i in 1 2 3; do echo line $i; sleep 0.2; done"},
	})
	talker := s.mustCrictl(t, "create", pod, talkerJSON, podJSON)
	s.mustCrictl(t, "start", talker)
	start := time.Now()
	out, errs, code = s.crictl(t, "", "attach", talker)
	if !strings.Contains(out, "line 1\nline 2\nline 3\n") || code != 0 {
		t.Errorf("crictl attach (after %v): out %q err %q exit %d", time.Since(start), out, errs, code)
	}

	// attach -i: input reaches a container created with stdin (once): cat echoes it and ends
	// when the input does.
	catJSON := writeJSONFile(t, map[string]any{
		"metadata": map[string]any{"name": "cat"}, "image": map[string]any{"image": "busybox"},
		"command": []string{"cat"}, "stdin": true, "stdin_once": true,
	})
	cat := s.mustCrictl(t, "create", pod, catJSON, podJSON)
	s.mustCrictl(t, "start", cat)
	out, errs, code = s.crictl(t, "fed through attach\n", "attach", "-i", cat)
	if out != "fed through attach\n" || code != 0 {
		t.Errorf("crictl attach -i: out %q err %q exit %d", out, errs, code)
	}
	waitFor(t, "cat to end with its input", func() error {
		if st := s.mustCrictl(t, "inspect", "-o", "go-template", "--template", "{{.status.state}}", cat); st != "CONTAINER_EXITED" {
			return fmt.Errorf("state %s", st)
		}
		return nil
	})

	// images: the one named by create is listed.
	if out := s.mustCrictl(t, "images", "-q"); !strings.HasPrefix(out, "sha256:") {
		t.Errorf("crictl images: %q", out)
	}

	s.mustCrictl(t, "rmp", "-f", pod)
	if out := s.mustCrictl(t, "pods", "-q"); out != "" {
		t.Errorf("pods after rmp -f: %q", out)
	}
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}
