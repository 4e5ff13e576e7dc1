package installer

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

func runCLI(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = Main(ctx, args, func(k string) string { return env[k] }, &o, &e)
	return code, o.String(), e.String()
}

func TestCLIUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"bins", "--no-such-flag"}, "flag provided but not defined"},
		{[]string{"config", "extra"}, "unexpected arguments"},
		{[]string{"config", "--mtu", "big"}, "invalid value"},
		{[]string{"uninstall", "--name", "../x"}, "network name"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, nil, c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", c.args, code, stderr, c.want)
		}
		if err := CheckArgs(c.args); err == nil {
			t.Errorf("CheckArgs(%v) accepted", c.args)
		}
	}
	if code, _, _ := runCLI(t, nil, "help"); code != 0 {
		t.Errorf("help: exit %d", code)
	}
	if err := CheckArgs([]string{"config", "--conf-dir", "/host/etc/cni/net.d", "--host-root", "/host"}); err != nil {
		t.Errorf("CheckArgs: %v", err)
	}
}

func TestCLIVersionRenderWait(t *testing.T) {
	code, out, _ := runCLI(t, nil, "version")
	if code != 0 || !strings.HasPrefix(out, "install-cni (cni-suite) ") {
		t.Errorf("version: %d %q", code, out)
	}
	code, out, stderr := runCLI(t, nil, "render", "--pod-cidr", "10.244.1.0/24", "--pod-cidr", "fd00:1::/64", "--mtu", "1450")
	if code != 0 || out != string(render(t, conflist.NetParams{MTU: 1450}, "10.244.1.0/24", "fd00:1::/64")) {
		t.Errorf("render: %d\n%s\n%s", code, out, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "render"); code != 1 || !strings.Contains(stderr, "--pod-cidr") {
		t.Errorf("render without CIDR: %d %s", code, stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"wait"}, os.Getenv, &bytes.Buffer{}, &bytes.Buffer{}) }()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("wait: exit %d", code)
	}
}

// The commands an operator and the DaemonSet run, in order, on one node's directories.
func TestCLIInstallReadyUninstall(t *testing.T) {
	root := t.TempDir()
	bin, conf := filepath.Join(root, "opt/cni/bin"), filepath.Join(root, "etc/cni/net.d")
	writeFile(t, filepath.Join(bin, "bandwidth"), []byte("someone else's plugin"), 0o755)
	os.MkdirAll(conf, 0o755)
	before := snapshot(t, root)

	if code, _, stderr := runCLI(t, nil, "bins", "--src", refPluginDir(t), "--dst", bin); code != 0 {
		t.Fatalf("bins: %d\n%s", code, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "ready", "--conf-dir", conf); code != 1 || !strings.Contains(stderr, "not ready") {
		t.Errorf("ready before config: %d %s", code, stderr)
	}
	code, _, stderr := runCLI(t, nil, "config", "--conf-dir", conf, "--pod-cidr", "10.244.2.0/24", "--mtu", "1500",
		"--host-root", root, "--data-dir", "/run/cni-suite/networks", "--once")
	if code != 0 {
		t.Fatalf("config: %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "run/cni-suite/networks")); err != nil {
		t.Errorf("data dir not created under --host-root: %v", err)
	}
	if code, out, stderr := runCLI(t, nil, "ready", "--conf-dir", conf); code != 0 || !strings.HasPrefix(out, "ready: ") {
		t.Errorf("ready after config: %d %q %s", code, out, stderr)
	}
	if code, _, stderr := runCLI(t, nil, "uninstall", "--dst", bin, "--conf-dir", conf); code != 0 {
		t.Fatalf("uninstall: %d\n%s", code, stderr)
	}
	os.RemoveAll(filepath.Join(root, "run"))
	if d := diffSnapshots(before, snapshot(t, root)); d != "" {
		t.Errorf("after uninstall:\n%s", d)
	}
	// bins from the directory of the binary itself (here: the test binary's, which holds no plugins).
	if code, _, stderr := runCLI(t, nil, "bins", "--dst", bin); code != 1 || !strings.Contains(stderr, "source binary") {
		t.Errorf("bins from own dir without plugins: %d %s", code, stderr)
	}
}
