// Package e2e runs the built binaries the way runtimes and operators do: through cnitool and
// libcni, with conflists, inside throwaway node and pod network namespaces.
package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// cnitool runs cnitool inside the node netns with the given conf dir and plugin dir.
func cnitool(t *testing.T, node *testenv.Node, confDir, binDir string, args ...string) (string, error) {
	t.Helper()
	tool := testenv.Cnitool(t) // built (once) from the machine's netns: the node netns has no route to the module proxy
	var out []byte
	err := node.Do(func() error {
		cmd := exec.Command(tool, args...)
		cmd.Env = append(os.Environ(), "NETCONFPATH="+confDir, "CNI_PATH="+binDir)
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	return string(out), err
}

func TestCnitoolLoopback(t *testing.T) {
	node := testenv.NewNode(t)
	pod := node.NewPod(t)
	pod.MustExec(t, "ip", "link", "set", "lo", "down")
	confDir := t.TempDir()
	conf := `{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"],"name":"lo-only","plugins":[{"type":"loopback"}]}`
	if err := os.WriteFile(filepath.Join(confDir, "10-lo.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := testenv.PluginDir(t)
	out, err := cnitool(t, node, confDir, bin, "add", "lo-only", pod.Path)
	if err != nil {
		t.Fatalf("cnitool add: %v\n%s", err, out)
	}
	if !strings.Contains(out, "127.0.0.1/8") {
		t.Errorf("cnitool add result lacks 127.0.0.1/8: %s", out)
	}
	if l := pod.MustExec(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(l, "UP") {
		t.Fatalf("lo not up after cnitool add: %s", l)
	}
	if out, err := cnitool(t, node, confDir, bin, "check", "lo-only", pod.Path); err != nil {
		t.Fatalf("cnitool check: %v\n%s", err, out)
	}
	if out, err := cnitool(t, node, confDir, bin, "del", "lo-only", pod.Path); err != nil {
		t.Fatalf("cnitool del: %v\n%s", err, out)
	}
	if l := pod.MustExec(t, "ip", "-o", "link", "show", "lo"); strings.Contains(l, ",UP") {
		t.Fatalf("lo still up after cnitool del: %s", l)
	}
}
