package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// host-local through libcni (cnitool): ADD, CHECK, STATUS, DEL, GC of a conflist whose only
// plugin is host-local, with its state in the node's throwaway data dir.
func TestCnitoolHostLocal(t *testing.T) {
	node := testenv.NewNode(t)
	pod := node.NewPod(t)
	confDir := t.TempDir()
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","cniVersions":["1.0.0","1.1.0"],"name":"hl-e2e","plugins":[`+
		`{"type":"host-local","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.66.0.0/24"}],[{"subnet":"fd00:66::/64"}]]}}]}`, node.DataDir)
	if err := os.WriteFile(filepath.Join(confDir, "10-hl.conflist"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := testenv.PluginDir(t)
	netDir := filepath.Join(node.DataDir, "hl-e2e")
	reservations := func() []string {
		es, _ := os.ReadDir(netDir)
		var out []string
		for _, e := range es {
			if n := e.Name(); n != "lock" && !strings.HasPrefix(n, "last_reserved_ip.") {
				out = append(out, n)
			}
		}
		return out
	}
	tool := func(args ...string) string {
		t.Helper()
		out, err := cnitool(t, node, confDir, bin, append(args, "hl-e2e", pod.Path)...)
		if err != nil {
			t.Fatalf("cnitool %v: %v\n%s", args, err, out)
		}
		return out
	}
	out := tool("add")
	if !strings.Contains(out, "10.66.0.2/24") || !strings.Contains(out, "fd00:66::2/64") {
		t.Fatalf("add result: %s", out)
	}
	tool("check")
	tool("status")
	tool("del")
	if r := reservations(); len(r) != 0 {
		t.Fatalf("del left %v", r)
	}
	if out := tool("add"); !strings.Contains(out, "10.66.0.3/24") {
		t.Fatalf("second add (round robin): %s", out)
	}
	// A reservation nobody knows about; cnitool's gc passes no valid attachment at all.
	os.WriteFile(filepath.Join(netDir, "10.66.0.99"), []byte("leaked\r\neth0"), 0o600)
	tool("gc")
	if r := reservations(); len(r) != 0 {
		t.Fatalf("gc left %v", r)
	}
}
