// Package testenv is the harness the suite's tests share: a root check, throwaway network
// namespaces (a "node" and its pods), and running plugin binaries the way a runtime does.
// Nothing here touches the machine's root network namespace: every namespace is made by the
// test and removed in t.Cleanup, also when the test fails.
package testenv

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
)

// RequireRootEnv, when "1", turns a skipped root test into a failure (CI runs as root).
const RequireRootEnv = "CNI_SUITE_REQUIRE_ROOT"

// RequireRoot skips the test when not root, or fails it when CNI_SUITE_REQUIRE_ROOT=1.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		if _, err := exec.LookPath("ip"); err != nil {
			t.Fatalf("root test needs iproute2 (run scripts/deps.sh): %v", err)
		}
		return
	}
	if os.Getenv(RequireRootEnv) == "1" {
		t.Fatalf("this test needs root and %s=1 forbids skipping it", RequireRootEnv)
	}
	t.Skip("needs root (network namespaces); run as root, CI sets " + RequireRootEnv + "=1")
}

// NS is a named network namespace made with `ip netns add`, bound at /run/netns/<Name>.
type NS struct {
	Name string
	Path string
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// NewNS makes a network namespace named cnis-<role>-<random> and removes it at cleanup.
// Its lo is brought up so local traffic works inside it.
func NewNS(t testing.TB, role string) *NS {
	t.Helper()
	RequireRoot(t)
	// CNI_SUITE_RUN tags the namespaces of one test run, so scripts/test.sh can tell its own
	// leftovers from those of other runs on the same machine.
	name := "cnis-" + role + "-" + randHex(4)
	if run := os.Getenv("CNI_SUITE_RUN"); run != "" {
		name = "cnis-" + run + "-" + role + "-" + randHex(4)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NS{Name: name, Path: "/run/netns/" + name}
	t.Cleanup(func() { n.Delete(t) })
	n.MustExec(t, "ip", "link", "set", "lo", "up")
	return n
}

// Delete removes the namespace; it does nothing when it is already gone.
func (n *NS) Delete(t testing.TB) {
	if _, err := os.Stat(n.Path); err != nil {
		return
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
}

// Do runs fn on a thread inside the namespace.
func (n *NS) Do(fn func() error) error {
	return ns.WithNetNSPath(n.Path, func(ns.NetNS) error { return fn() })
}

// Exec runs a command inside the namespace (`ip netns exec`) and returns its combined output.
func (n *NS) Exec(name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// MustExec is Exec that fails the test on error.
func (n *NS) MustExec(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := n.Exec(name, args...)
	if err != nil {
		t.Fatalf("in netns %s: %s %s: %v\n%s", n.Name, name, strings.Join(args, " "), err, out)
	}
	return out
}

// Node is a throwaway "node": a netns standing for the host's root netns, plus a data dir.
type Node struct {
	*NS
	DataDir string
}

// NewNode makes a node netns and a temporary data dir, both removed at cleanup.
func NewNode(t testing.TB) *Node {
	t.Helper()
	return &Node{NS: NewNS(t, "node"), DataDir: t.TempDir()}
}

// NewPod makes a pod netns, removed at cleanup.
func (nd *Node) NewPod(t testing.TB) *NS {
	t.Helper()
	return NewNS(t, "pod")
}
