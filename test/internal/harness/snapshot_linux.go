package harness

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
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

// Capture takes the state of the node netns (by name), the data dir, and the pod netns.
func Capture(nodeName, dataDir string, pods ...string) (State, error) {
	s := State{}
	var err error
	if s["node links"], err = links(nodeName); err != nil {
		return nil, err
	}
	if s["node addrs"], err = addrs(nodeName); err != nil {
		return nil, err
	}
	for _, fam := range []string{"-4", "-6"} {
		out, err := ExecIn(nodeName, "ip", fam, "route", "show", "table", "all")
		if err != nil {
			return nil, err
		}
		var keep []string
		for _, l := range lines(out) {
			if strings.Contains(l, "fe80::") || strings.HasPrefix(l, "multicast") || strings.Contains(l, "ff00::/8") {
				continue
			}
			keep = append(keep, l)
		}
		s["node routes "+fam] = keep
	}
	for _, prog := range []string{"iptables-save", "ip6tables-save"} {
		out, err := ExecIn(nodeName, prog)
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
	if out, err := ExecIn(nodeName, "nft", "list", "ruleset"); err == nil {
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
		if s["pod "+name+" links"], err = links(name); err != nil {
			return nil, err
		}
	}
	for k := range s {
		sort.Strings(s[k])
	}
	return s, nil
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

func links(nsName string) ([]string, error) {
	out, err := ExecIn(nsName, "ip", "-j", "-d", "link", "show")
	if err != nil {
		return nil, err
	}
	var ls []struct {
		Name     string `json:"ifname"`
		Master   string `json:"master"`
		Address  string `json:"address"`
		LinkInfo struct {
			Kind string `json:"info_kind"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		return nil, fmt.Errorf("ip -j link in %s: %w", nsName, err)
	}
	var res []string
	for _, l := range ls {
		s := l.Name + " kind=" + l.LinkInfo.Kind
		if l.Master != "" {
			s += " master=" + l.Master
		}
		res = append(res, s)
	}
	return res, nil
}

func addrs(nsName string) ([]string, error) {
	out, err := ExecIn(nsName, "ip", "-j", "addr", "show")
	if err != nil {
		return nil, err
	}
	var ls []struct {
		Name  string `json:"ifname"`
		Addrs []struct {
			Local  string `json:"local"`
			Prefix int    `json:"prefixlen"`
			Scope  string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		return nil, fmt.Errorf("ip -j addr in %s: %w", nsName, err)
	}
	var res []string
	for _, l := range ls {
		for _, a := range l.Addrs {
			if a.Scope == "link" {
				continue
			}
			res = append(res, fmt.Sprintf("%s %s/%d", l.Name, a.Local, a.Prefix))
		}
	}
	return res, nil
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
