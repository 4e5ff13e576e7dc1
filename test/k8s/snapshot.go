package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// machinePaths are the machine paths a kubelet or containerd would write by default; the run
// points them all into its state dir, and the snapshot proves none appeared or changed.
var machinePaths = []string{
	"/etc/cni", "/etc/containerd", "/opt/cni", "/opt/containerd", "/var/lib/kubelet",
	"/var/lib/cni", "/var/lib/containerd", "/var/lib/containers", "/var/log/pods",
	"/var/log/containers", "/run/containerd", "/run/runc", "/etc/kubernetes",
	"/root/.kube",
}

var (
	reQlen     = regexp.MustCompile(` qlen [0-9]+`)
	reLft      = regexp.MustCompile(`(valid_lft|preferred_lft) [^ ]+`)
	reCounters = regexp.MustCompile(`\[[0-9]+:[0-9]+\]`)
	reNftCount = regexp.MustCompile(`counter packets [0-9]+ bytes [0-9]+`)
)

// Snapshot is the machine state the run must leave as it found it, section by section.
type Snapshot map[string][]string

func cmdLines(name string, args ...string) []string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return []string{fmt.Sprintf("<%s: %v>", name, err)}
	}
	return splitLines(string(out))
}

func splitLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		if l := strings.TrimRight(sc.Text(), " "); l != "" {
			out = append(out, l)
		}
	}
	return out
}

func mapLines(in []string, f func(string) string) []string {
	out := make([]string, 0, len(in))
	for _, l := range in {
		if l = f(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// TakeSnapshot reads the root network namespace (links, addresses, routes, rules, iptables,
// nftables), the sysctls kubelet touches, the cgroup hierarchies' top level, the root mount
// table and the machine paths above. Counters and lifetimes, which change by themselves, are
// blanked.
func TakeSnapshot() Snapshot {
	s := Snapshot{}
	sorted := func(l []string) []string { sort.Strings(l); return l }
	s["links"] = sorted(mapLines(cmdLines("ip", "-o", "link", "show"), func(l string) string { return reQlen.ReplaceAllString(l, "") }))
	s["addrs"] = sorted(mapLines(cmdLines("ip", "-o", "addr", "show"), func(l string) string { return reLft.ReplaceAllString(l, "") }))
	s["routes4"] = sorted(cmdLines("ip", "-4", "route", "show", "table", "all"))
	s["routes6"] = sorted(cmdLines("ip", "-6", "route", "show", "table", "all"))
	s["rules"] = cmdLines("ip", "rule", "show")
	for _, t := range []string{"iptables-save", "ip6tables-save"} {
		s[t] = mapLines(cmdLines(t), func(l string) string {
			if strings.HasPrefix(l, "#") {
				return ""
			}
			return reCounters.ReplaceAllString(l, "[0:0]")
		})
	}
	s["nft"] = mapLines(cmdLines("nft", "list", "ruleset"), func(l string) string { return reNftCount.ReplaceAllString(l, "counter") })
	var sys []string
	for _, k := range kubeletSysctls {
		v, err := os.ReadFile("/proc/sys/" + k.Path)
		sys = append(sys, fmt.Sprintf("%s=%s err=%v", k.Path, strings.TrimSpace(string(v)), err))
	}
	for _, k := range []string{"net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding", "net/ipv6/conf/all/forwarding",
		"net/bridge/bridge-nf-call-iptables", "net/ipv4/conf/all/route_localnet"} {
		v, err := os.ReadFile("/proc/sys/" + k)
		if err == nil {
			sys = append(sys, k+"="+strings.TrimSpace(string(v)))
		}
	}
	s["sysctls"] = sys
	var cg []string
	if hs, err := cgroupHierarchies(); err == nil {
		for _, h := range hs {
			ents, _ := os.ReadDir(h)
			for _, e := range ents {
				if e.IsDir() {
					cg = append(cg, filepath.Join(h, e.Name()))
				}
			}
		}
	}
	s["cgroups"] = cg
	// Mount points of the root mount namespace, without namespace pins (nsfs: other tests on the
	// machine pin and unpin their own namespaces meanwhile; ours are checked by name).
	var mnts []string
	for _, l := range cmdLines("cat", "/proc/self/mountinfo") {
		f := strings.Fields(l)
		fstype := ""
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				fstype = f[i+1]
				break
			}
		}
		if len(f) > 4 && fstype != "nsfs" {
			mnts = append(mnts, f[4]+" "+fstype)
		}
	}
	s["mounts"] = sorted(mnts)
	var paths []string
	for _, p := range machinePaths {
		paths = append(paths, describeTree(p)...)
	}
	s["paths"] = paths
	return s
}

// describeTree lists path and what is below it (names, sizes, modes), or that it is absent.
func describeTree(root string) []string {
	var out []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		out = append(out, fmt.Sprintf("%s %v %d", p, fi.Mode(), sizeIfFile(fi)))
		return nil
	})
	if len(out) == 0 || err != nil {
		return []string{root + " absent"}
	}
	return out
}

func sizeIfFile(fi os.FileInfo) int64 {
	if fi.Mode().IsRegular() {
		return fi.Size()
	}
	return 0
}

// Diff returns a readable difference per section, empty when the snapshots are equal.
func (a Snapshot) Diff(b Snapshot) []string {
	var keys []string
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		inB, inA := count(b[k]), count(a[k])
		for _, l := range a[k] {
			if inB[l] > 0 {
				inB[l]--
			} else {
				out = append(out, fmt.Sprintf("%s: - %s", k, l))
			}
		}
		for _, l := range b[k] {
			if inA[l] > 0 {
				inA[l]--
			} else {
				out = append(out, fmt.Sprintf("%s: + %s", k, l))
			}
		}
	}
	return out
}

func count(l []string) map[string]int {
	m := map[string]int{}
	for _, s := range l {
		m[s]++
	}
	return m
}
