package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Addresses inside the throwaway namespaces (10.x only, never in the machine's root netns).
const (
	nodeIP      = "10.213.0.2"
	peerIP      = "10.213.0.1"
	uplinkCIDR  = 24
	clusterCIDR = "10.244.0.0/16"
	serviceCIDR = "10.96.0.0/16"
	serviceIP   = "10.96.0.1"
	nodeName    = "cnis-e2e-node"
)

// kubeletSysctls are the kernel tunables kubelet checks (and would write without
// protectKernelDefaults), with the values it wants: inside the node's private mount namespace
// each /proc/sys file is covered by a bind mount of a file holding that value.
var kubeletSysctls = []struct {
	Path  string
	Value string
}{
	{"kernel/panic", "10"},
	{"kernel/panic_on_oops", "1"},
	{"vm/overcommit_memory", "1"},
	{"vm/panic_on_oom", "0"},
	{"kernel/keys/root_maxkeys", "1000000"},
	{"kernel/keys/root_maxbytes", "25000000"},
}

// overlaidDirs are the machine directories that the node sees through an overlay whose upper
// layer is in the state dir: kubelet's hard-coded /var/lib/kubelet/device-plugins and
// /var/log/{pods,containers}, libcni's /var/lib/cni cache, /etc/cni/net.d and /opt/cni/bin (which
// the DaemonSet's hostPath volumes name), containerd's /opt/containerd. Writes land in the state
// dir; the machine's own directories are never written.
var overlaidDirs = []string{"/etc", "/opt", "/var"}

// Node is one throwaway Kubernetes node: a network namespace with an uplink veth to a second
// "peer" namespace (the outside world: the node IP is reachable from there), a private mount
// namespace held open by a holder process, and a cgroup root in every hierarchy.
type Node struct {
	ID       string
	Label    string // the flow's name, prefixing its daemons' logs
	State    string // private state dir; everything the run writes lives below it
	NetNS    string // /run/netns/<name>
	PeerNS   string
	netName  string
	peerName string
	Holder   *Proc
	MntIno   uint64
	CgroupRt string // kubelet cgroupRoot, "/cnis-e2e-<id>"
	cgDirs   []string
	sup      *Supervisor
	logf     func(string, ...any)
}

func randID() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// NewNode makes the namespaces, the holder, the private mounts and the cgroup roots. On error
// the caller still calls Teardown, which undoes whatever was done.
func NewNode(ctx context.Context, sup *Supervisor, label, state string, logf func(string, ...any)) (*Node, error) {
	id := randID()
	n := &Node{ID: id, Label: label, State: state, sup: sup, logf: logf,
		netName: "cnis-k8snode-" + id, peerName: "cnis-k8speer-" + id,
		CgroupRt: "/cnis-e2e-" + id}
	n.NetNS, n.PeerNS = "/run/netns/"+n.netName, "/run/netns/"+n.peerName
	for _, name := range []string{n.netName, n.peerName} {
		if _, err := run("ip", "netns", "add", name); err != nil {
			return n, err
		}
	}
	// The veth is created inside the node netns with its peer end moved straight into the peer
	// netns: no link ever exists in the root netns, even for a moment.
	steps := [][]string{
		{"ip", "-n", n.netName, "link", "set", "lo", "up"},
		{"ip", "-n", n.peerName, "link", "set", "lo", "up"},
		{"ip", "-n", n.netName, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", n.peerName},
		{"ip", "-n", n.netName, "addr", "add", fmt.Sprintf("%s/%d", nodeIP, uplinkCIDR), "dev", "eth0"},
		{"ip", "-n", n.peerName, "addr", "add", fmt.Sprintf("%s/%d", peerIP, uplinkCIDR), "dev", "eth0"},
		{"ip", "-n", n.netName, "link", "set", "eth0", "up"},
		{"ip", "-n", n.peerName, "link", "set", "eth0", "up"},
		{"ip", "-n", n.netName, "route", "add", "default", "via", peerIP},
		// the peer routes the cluster's pod range to the node, as a cloud route table would
		{"ip", "-n", n.peerName, "route", "add", clusterCIDR, "via", nodeIP},
	}
	for _, s := range steps {
		if _, err := run(s[0], s[1:]...); err != nil {
			return n, err
		}
	}
	// The holder: a process in the node netns and a new private mount namespace; every daemon
	// enters both through it (nsenter, not ip netns exec, which remounts /sys and hides cgroups).
	h, err := sup.Start(label+"-holder", nil, "nsenter", "--net="+n.NetNS, "--",
		"unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	if err != nil {
		return n, err
	}
	n.Holder = h
	selfMnt, err := nsInode(0, "mnt")
	if err != nil {
		return n, err
	}
	if err := waitFor(ctx, 10*time.Second, 20*time.Millisecond, "the mount namespace holder", func() (bool, error) {
		if done, err := h.Exited(); done {
			return false, fmt.Errorf("holder exited: %v", err)
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", h.PID))
		ino, err := nsInode(h.PID, "mnt")
		if err != nil {
			return false, err
		}
		n.MntIno = ino
		return ino != selfMnt && strings.HasSuffix(exe, "/sleep"), nil
	}); err != nil {
		return n, err
	}
	if err := n.setupMounts(); err != nil {
		return n, err
	}
	return n, n.setupCgroups()
}

// Enter prefixes argv so that it runs in the node's network and mount namespaces.
func (n *Node) Enter(argv ...string) []string {
	return append([]string{"nsenter", fmt.Sprintf("--target=%d", n.Holder.PID), "--net", "--mount", "--"}, argv...)
}

// Exec runs argv in the node's namespaces and returns its combined output.
func (n *Node) Exec(ctx context.Context, timeout time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	a := n.Enter(argv...)
	cmd := exec.CommandContext(ctx, a[0], a[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+filepath.Join(n.State, "home"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(lastLines(string(out), 5)))
	}
	return string(out), nil
}

// Path maps a path as the node sees it to one the harness can open from the root mount
// namespace: /proc/<holder>/root resolves through the node's mounts (overlays included).
func (n *Node) Path(p string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.Holder.PID, p)
}

func (n *Node) setupMounts() error {
	var b strings.Builder
	b.WriteString("set -eu\n")
	// A private /run: containerd's shim sockets and runc state, the installer's /run state.
	b.WriteString("mount -t tmpfs -o mode=0755 cnis-run /run\n")
	for _, d := range overlaidDirs {
		base := filepath.Join(n.State, "overlay", strings.TrimPrefix(d, "/"))
		fmt.Fprintf(&b, "mkdir -p %s/upper %s/work\n", base, base)
		fmt.Fprintf(&b, "mount -t overlay cnis-%s -o lowerdir=%s,upperdir=%s/upper,workdir=%s/work %s\n",
			strings.TrimPrefix(d, "/"), d, base, base, d)
	}
	// sysfs as seen from the node netns (/sys/class/net lists the node's links), keeping the
	// cgroup mounts kubelet and runc need.
	keep := filepath.Join(n.State, "cgroup-keep")
	fmt.Fprintf(&b, "mkdir -p %s\nmount --rbind /sys/fs/cgroup %s\n", keep, keep)
	fmt.Fprintf(&b, "mount -t sysfs cnis-sysfs /sys\nmount --move %s /sys/fs/cgroup\n", keep)
	sysdir := filepath.Join(n.State, "sysctl")
	fmt.Fprintf(&b, "mkdir -p %s\n", sysdir)
	for _, s := range kubeletSysctls {
		f := filepath.Join(sysdir, strings.ReplaceAll(s.Path, "/", "."))
		fmt.Fprintf(&b, "echo %s > %s\nmount --bind %s /proc/sys/%s\n", s.Value, f, f, s.Path)
	}
	out, err := exec.Command("nsenter", fmt.Sprintf("--target=%d", n.Holder.PID), "--net", "--mount", "--",
		"sh", "-c", b.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("private mounts: %w: %s", err, out)
	}
	// Prove it: the node sees the wanted values, the machine keeps its own.
	for _, s := range kubeletSysctls {
		got, err := os.ReadFile(n.Path("/proc/sys/" + s.Path))
		if err != nil || strings.TrimSpace(string(got)) != s.Value {
			return fmt.Errorf("node view of %s is %q (%v), want %s", s.Path, got, err, s.Value)
		}
	}
	return nil
}

// cgroupHierarchies lists the mounted cgroup hierarchies (v1 controllers, named ones, unified).
func cgroupHierarchies() ([]string, error) {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil && e.IsDir() {
			out = append(out, p)
		}
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.procs"); err == nil { // pure cgroup v2
		out = append(out, "/sys/fs/cgroup")
	}
	sort.Strings(out)
	return out, nil
}

// setupCgroups makes kubelet's cgroupRoot in every hierarchy (cpuset needs cpus and mems first).
func (n *Node) setupCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		d := filepath.Join(h, n.CgroupRt)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("cgroup root: %w", err)
		}
		n.cgDirs = append(n.cgDirs, d)
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("%s: %w", f, err)
				}
			}
		}
	}
	return nil
}

// cgroupPIDs lists every process in the node's cgroup trees.
func (n *Node) cgroupPIDs() []int {
	seen := map[int]bool{}
	var out []int
	for _, d := range n.cgDirs {
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// removeCgroups removes the cgroup trees depth-first; it retries while the kernel still counts
// exited tasks in them.
func (n *Node) removeCgroups(ctx context.Context) error {
	var errs []error
	for _, d := range n.cgDirs {
		err := waitFor(ctx, 10*time.Second, 100*time.Millisecond, "cgroup removal of "+d, func() (bool, error) {
			var dirs []string
			_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
				if err == nil && e.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			var last error
			for i := len(dirs) - 1; i >= 0; i-- {
				if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
					last = err
				}
			}
			_, err := os.Stat(d)
			return errors.Is(err, os.ErrNotExist), last
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Dial opens a TCP connection from inside a network namespace (the socket is made there).
func dialIn(nsPath string, addr string, timeout time.Duration) (net.Conn, error) {
	h, err := ns.GetNS(nsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var c net.Conn
	err = h.Do(func(ns.NetNS) error {
		var derr error
		c, derr = net.DialTimeout("tcp", addr, timeout)
		return derr
	})
	return c, err
}

// Teardown kills every process of the node (its daemons were stopped before), removes the
// cgroups and the namespaces. It reports what it could not undo.
func (n *Node) Teardown(ctx context.Context) error {
	var errs []error
	// Anything still in the node's cgroups (containers) or its mount namespace (daemons, shims),
	// or re-parented to us: all ours by construction, killed by PID. The holder goes last, once
	// nothing else is left, and rounds repeat until the namespace is empty (a runtime shim can
	// start a helper while it dies).
	holderPID := 0
	if n.Holder != nil {
		holderPID = n.Holder.PID
	}
	leftovers := func(withHolder bool) []int {
		var pids []int
		pids = append(pids, n.cgroupPIDs()...)
		if n.MntIno != 0 {
			for _, p := range PIDsInNS("mnt", n.MntIno) {
				if withHolder || p != holderPID {
					pids = append(pids, p)
				}
			}
		}
		return append(pids, n.sup.Orphans()...)
	}
	err := waitFor(ctx, 20*time.Second, 100*time.Millisecond, "the node's processes to end", func() (bool, error) {
		pids := leftovers(false)
		if len(pids) == 0 {
			return true, nil
		}
		n.logf("teardown: killing leftover processes %s", describePIDs(pids))
		if left := n.sup.KillPIDs(ctx, pids); len(left) > 0 {
			return false, fmt.Errorf("still alive: %s", describePIDs(left))
		}
		return len(leftovers(false)) == 0, nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	if n.Holder != nil {
		n.sup.Stop(n.Holder, time.Second)
	}
	if n.MntIno != 0 {
		err := waitFor(ctx, 10*time.Second, 100*time.Millisecond, "the mount namespace to empty", func() (bool, error) {
			pids := leftovers(true)
			if len(pids) == 0 {
				return true, nil
			}
			n.sup.KillPIDs(ctx, pids)
			return false, fmt.Errorf("still used by %s", describePIDs(pids))
		})
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.removeCgroups(ctx); err != nil {
		errs = append(errs, err)
	}
	for _, name := range []string{n.netName, n.peerName} {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			if _, err := run("ip", "netns", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// describePIDs renders "pid(command line)" for each PID, for logs and errors.
func describePIDs(pids []int) string {
	var parts []string
	for _, p := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		if len(cmd) > 80 {
			cmd = cmd[:80] + "..."
		}
		parts = append(parts, fmt.Sprintf("%d(%s)", p, cmd))
	}
	return strings.Join(parts, ", ")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
