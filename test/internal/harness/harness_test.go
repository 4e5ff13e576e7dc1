package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func TestDiff(t *testing.T) {
	a := State{"x": {"1", "2", "2"}, "gone": {"a"}}
	b := State{"x": {"2", "3"}, "new": {"b"}}
	got := Diff(a, b)
	want := []string{"gone: - a", "new: + b", "x: + 3", "x: - 1", "x: - 2"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff = %q, want %q", got, want)
	}
	if d := Diff(a, a); len(d) != 0 {
		t.Fatalf("Diff of a state with itself = %q", d)
	}
}

// TestCaptureSeesChanges: the leak detector the reliability suite relies on sees each kind
// of state a plugin makes (link, address, route, iptables rule, nftables table, reservation
// file, pod link), and nothing when nothing changed.
func TestCaptureSeesChanges(t *testing.T) {
	node := testenv.NewNode(t)
	pod := node.NewPod(t)
	before, err := Capture(node.Name, node.DataDir, pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Capture(node.Name, node.DataDir, pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(before, again); len(d) != 0 {
		t.Fatalf("two captures of an untouched node differ:\n%s", strings.Join(d, "\n"))
	}
	node.MustExec(t, "ip", "link", "add", "cnistest0", "type", "veth", "peer", "name", "cnistest0p")
	node.MustExec(t, "ip", "addr", "add", "10.66.0.1/24", "dev", "cnistest0")
	node.MustExec(t, "ip", "link", "set", "cnistest0", "up")
	node.MustExec(t, "iptables", "-t", "nat", "-N", "CNI-0123456789abcdef01234567")
	node.MustExec(t, "nft", "add", "table", "inet", "cnistest")
	pod.MustExec(t, "ip", "link", "add", "cnistest1", "type", "bridge")
	if err := os.MkdirAll(filepath.Join(node.DataDir, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(node.DataDir, "net", "10.66.0.2"), []byte("id\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	after, err := Capture(node.Name, node.DataDir, pod.Path)
	if err != nil {
		t.Fatal(err)
	}
	d := strings.Join(Diff(before, after), "\n")
	for _, want := range []string{
		"node links: + cnistest0 kind=veth",
		"node addrs: + cnistest0 10.66.0.1/24",
		"node routes: + 10.66.0.0/24 dev cnistest0",
		"iptables-save: + :CNI-0123456789abcdef01234567",
		"nft: + inet cnistest:",
		"links: + cnistest1 kind=bridge",
		`data dir: + net/10.66.0.2 "id\r\neth0"`,
	} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	left := Leftovers(after, []string{"nosuchid"})
	if len(left) != 4 { // two veths, the per-container chain and the reservation
		t.Errorf("Leftovers = %q, want 2 veths, the CNI-<hash> chain and the reservation", left)
	}
}

// TestExecCounter: the programs our descendants execute are counted, with names, and a
// fence makes the count complete.
func TestExecCounter(t *testing.T) {
	testenv.RequireRoot(t)
	c, err := NewExecCounter()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before, _ := c.Counts()
	// sh runs sleep (long enough to be named) and true twice.
	if out, err := exec.Command("sh", "-c", "sleep 0.2; /bin/true; /bin/true").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	d, lost, err := c.Since(before)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range d {
		total += n
	}
	if lost || total != 4 || d["sleep"] != 1 {
		t.Fatalf("counted %v (lost %v), want 4 execs: sh, sleep, true, true", d, lost)
	}
}
