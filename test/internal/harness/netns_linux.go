package harness

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/cni-suite/cni-suite/pkg/link"
)

// NS is a named network namespace bound at /run/netns/<Name> (as `ip netns add` makes it).
type NS struct {
	Name string
	Path string
}

// RandHex returns n random bytes in hex.
func RandHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// NewNS makes the namespace cnis-<role>-<random> with lo up.
func NewNS(role string) (*NS, error) {
	all, err := NewNSBatch(role, 1)
	if err != nil {
		return nil, err
	}
	return all[0], nil
}

// NewNSBatch makes n namespaces cnis-<role>-<random>-<i> with one `ip -batch` run, lo up in
// each. On error the ones made are removed.
func NewNSBatch(role string, n int) ([]*NS, error) {
	prefix := "cnis-" + role + "-" + RandHex(3)
	var script bytes.Buffer
	out := make([]*NS, n)
	for i := range out {
		name := fmt.Sprintf("%s-%d", prefix, i)
		out[i] = &NS{Name: name, Path: "/run/netns/" + name}
		fmt.Fprintf(&script, "netns add %s\n", name)
	}
	cmd := exec.Command("ip", "-batch", "-")
	cmd.Stdin = &script
	if b, err := cmd.CombinedOutput(); err != nil {
		DeleteAll(out)
		return nil, fmt.Errorf("ip -batch (netns add %s-*): %w: %s", prefix, err, b)
	}
	for _, x := range out {
		if err := loUp(x.Path); err != nil {
			DeleteAll(out)
			return nil, err
		}
	}
	return out, nil
}

func loUp(path string) error {
	h, err := link.OpenHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("lo up in %s: %w", path, err)
	}
	return nil
}

// DeleteAll removes the namespaces that still exist, with one `ip -batch` run.
func DeleteAll(all []*NS) error {
	var script bytes.Buffer
	for _, n := range all {
		if n == nil {
			continue
		}
		if _, err := os.Stat(n.Path); err == nil {
			fmt.Fprintf(&script, "netns del %s\n", n.Name)
		}
	}
	if script.Len() == 0 {
		return nil
	}
	cmd := exec.Command("ip", "-force", "-batch", "-")
	cmd.Stdin = &script
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del: %w: %s", err, b)
	}
	return nil
}

// Delete removes the namespace; a namespace already gone is no error.
func (n *NS) Delete() error { return DeleteAll([]*NS{n}) }

// Do runs fn on an OS thread locked inside the namespace; the goroutine's thread is put
// back into its own namespace afterwards (pkg/ns), so processes fn starts are born inside.
func (n *NS) Do(fn func() error) error { return InNS(n.Path, fn) }

// InNS is Do for a namespace path.
func InNS(path string, fn func() error) error {
	return ns.WithNetNSPath(path, func(ns.NetNS) error { return fn() })
}

// Exec runs a program inside the namespace (`ip netns exec`) and returns its stdout; the
// error carries stderr.
func (n *NS) Exec(name string, args ...string) (string, error) {
	return ExecIn(n.Name, name, args...)
}

// ExecIn runs a program inside the named namespace.
func ExecIn(nsName, name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", nsName, name}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("in netns %s: %s %s: %w: %s", nsName, name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
