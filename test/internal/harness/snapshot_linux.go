package harness

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cni-suite/cni-suite/pkg/link"
)

// State is what a node looks like, section by section, as sorted lines: the node netns'
// links, addresses, routes, iptables/ip6tables rules and nftables ruleset, the host-local
// reservations under the data dir, and the links of each pod netns given. Two captures of
// an untouched node are equal; parts that change by themselves (counters, link flags,
// IPv6 link-local addresses, the content of last_reserved_ip) are left out.
type State map[string][]string

// xtablesTables are the tables iptables-nft and ip6tables-nft manage.
var xtablesTables = map[string]bool{}

func init() {
	for _, fam := range []string{"ip", "ip6"} {
		for _, t := range []string{"nat", "filter", "mangle", "raw", "security"} {
			xtablesTables[fam+" "+t] = true
		}
	}
}

var (
	counterRe  = regexp.MustCompile(`\[\d+:\d+\]`)
	nftCountRe = regexp.MustCompile(`counter packets \d+ bytes \d+`)
)

// Capture takes the state of the node netns (by name), the data dir, and the pod netns
// (by path). Links, addresses and routes are read over netlink; iptables-save,
// ip6tables-save and nft run from a thread inside the node netns.
func Capture(nodeName, dataDir string, pods ...string) (State, error) {
	s := State{}
	nodePath := "/run/netns/" + nodeName
	if err := netlinkState(s, "node", nodePath, true); err != nil {
		return nil, err
	}
	for _, prog := range []string{"iptables-save", "ip6tables-save"} {
		out, err := runIn(nodePath, prog)
		if err != nil {
			return nil, err
		}
		var keep []string
		for _, l := range lines(out) {
			if strings.HasPrefix(l, "#") {
				continue
			}
			keep = append(keep, counterRe.ReplaceAllString(l, "[0:0]"))
		}
		s[prog] = keep
	}
	if out, err := runIn(nodePath, "nft", "list", "ruleset"); err == nil {
		// The tables iptables-nft manages are in iptables-save already; keep the others
		// (the nftables backends' cni_plugins_masquerade, cni_hostport, ...), each line
		// prefixed with its table so equal lines of two tables stay apart.
		var keep []string
		table, skip := "", false
		for _, l := range lines(out) {
			tl := strings.TrimSpace(l)
			if strings.HasPrefix(tl, "#") {
				continue
			}
			if strings.HasPrefix(l, "table ") {
				table = strings.TrimSuffix(strings.TrimPrefix(l, "table "), " {")
				skip = xtablesTables[table]
			}
			if skip {
				continue
			}
			keep = append(keep, table+": "+nftCountRe.ReplaceAllString(tl, "counter"))
		}
		s["nft"] = keep
	}
	if dataDir != "" {
		var err error
		if s["data dir"], err = dataFiles(dataDir); err != nil {
			return nil, err
		}
	}
	for _, p := range pods {
		name := filepath.Base(p)
		if _, err := os.Stat(p); err != nil {
			s["pod "+name+" links"] = []string{"(netns gone)"}
			continue
		}
		if err := netlinkState(s, "pod "+name, p, false); err != nil {
			return nil, err
		}
	}
	for k := range s {
		sort.Strings(s[k])
	}
	return s, nil
}

// runIn runs a program from a thread inside the netns and returns its stdout.
func runIn(nsPath, name string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	err := InNS(nsPath, func() error {
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		return cmd.Run()
	})
	if err != nil {
		return "", fmt.Errorf("in netns %s: %s %s: %w: %s", nsPath, name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// netlinkState records the links (name, kind, master) of the netns at path under
// "<prefix> links", and with full set also its addresses and routes (without IPv6
// link-local and multicast ones, which come and go by themselves).
func netlinkState(s State, prefix, path string, full bool) error {
	h, err := link.OpenHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	ls, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("%s: list links: %w", prefix, err)
	}
	names := map[int]string{}
	for _, l := range ls {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []string
	for _, l := range ls {
		x := l.Attrs().Name + " kind=" + l.Type()
		if m := l.Attrs().MasterIndex; m != 0 {
			x += " master=" + names[m]
		}
		out = append(out, x)
	}
	s[prefix+" links"] = out
	if !full {
		return nil
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("%s: list addresses: %w", prefix, err)
	}
	out = nil
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, names[a.LinkIndex]+" "+a.IPNet.String())
	}
	s[prefix+" addrs"] = out
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("%s: list routes: %w", prefix, err)
	}
	out = nil
	for _, r := range routes {
		dst := "default"
		if r.Dst != nil {
			if r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast() || r.Dst.IP.IsInterfaceLocalMulticast() {
				continue
			}
			dst = r.Dst.String()
		}
		x := fmt.Sprintf("%s dev %s table %d", dst, names[r.LinkIndex], r.Table)
		if r.Gw != nil {
			x += " via " + r.Gw.String()
		}
		if r.Src != nil {
			x += " src " + r.Src.String()
		}
		out = append(out, x)
	}
	s[prefix+" routes"] = out
	return nil
}

// dataFiles lists the data dir: reservation files (named by an IP) with their content,
// other files by name only (lock, last_reserved_ip.N, an index of ours).
func dataFiles(root string) ([]string, error) {
	var res []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		// Our host-local's index (<dataDir>/.<network>.index) is a cache beside the reference's
		// state: its bucket files stay once made (bounded in number) and nothing depends on
		// them being current, so they are not leftovers. The reservations are.
		if d.IsDir() && strings.HasPrefix(d.Name(), ".") && strings.HasSuffix(d.Name(), ".index") {
			return fs.SkipDir
		}
		if d.IsDir() {
			if rel != "." {
				res = append(res, rel+"/")
			}
			return nil
		}
		if _, perr := netip.ParseAddr(d.Name()); perr == nil {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			res = append(res, fmt.Sprintf("%s %q", rel, b))
			return nil
		}
		res = append(res, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list data dir: %w", err)
	}
	return res, nil
}

// Diff lists what changed from a to b, as "section: + line" and "section: - line".
func Diff(a, b State) []string {
	var keys []string
	seen := map[string]bool{}
	for k := range a {
		keys, seen[k] = append(keys, k), true
	}
	for k := range b {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		count := map[string]int{}
		for _, l := range a[k] {
			count[l]--
		}
		for _, l := range b[k] {
			count[l]++
		}
		var ch []string
		for l, c := range count {
			for ; c > 0; c-- {
				ch = append(ch, k+": + "+l)
			}
			for ; c < 0; c++ {
				ch = append(ch, k+": - "+l)
			}
		}
		sort.Strings(ch)
		out = append(out, ch...)
	}
	return out
}
