package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-suite/cni-suite/pkg/link"
)

// perPodChain matches the per-container chains and tables of the reference layout
// (iptables CNI-<hash>, CNI-DN-<hash>; the nftables backends name none per container,
// their rules carry the container ID, which Leftovers also looks for).
var perPodChain = regexp.MustCompile(`CNI-(DN-)?[0-9a-f]{16,}`)

// Leftovers lists what pods left on a node after their DEL: veths in the node, per-pod
// chains and rules naming a container ID (iptables and nftables), reservation files.
// Shared structures that stay by design (the bridge, CNI-HOSTPORT-* chains, the
// masquerade table, lock and last_reserved_ip files) are not leftovers.
func Leftovers(s State, containerIDs []string) []string {
	var out []string
	for _, l := range s["node links"] {
		if strings.Contains(l, "kind=veth") {
			out = append(out, "node link: "+l)
		}
	}
	for _, sec := range []string{"iptables-save", "ip6tables-save", "nft"} {
		for _, l := range s[sec] {
			hit := perPodChain.MatchString(l)
			for _, id := range containerIDs {
				if hit || strings.Contains(l, id) {
					hit = true
					break
				}
			}
			if hit {
				out = append(out, sec+": "+strings.TrimSpace(l))
			}
		}
	}
	for _, l := range s["data dir"] {
		if strings.Contains(l, " ") { // reservation files carry their content
			out = append(out, "reservation: "+l)
		}
	}
	return out
}

// HasLink reports whether the netns at path holds a link of that name (false when the
// netns is gone).
func HasLink(path, name string) (bool, error) {
	h, err := link.OpenHandle(path)
	if err != nil {
		var gone ns.NSPathNotExistErr
		if errors.As(err, &gone) {
			return false, nil
		}
		return false, err
	}
	defer h.Close()
	if _, err := h.LinkByName(name); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// WaitVeths waits until the node netns holds at most n veth links. A pod netns removed
// with `ip netns del` takes its veth pair with it only when the kernel gets to destroy
// the namespace, asynchronously (much later on a loaded machine).
func WaitVeths(nodeName string, n int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	h, err := link.OpenHandle("/run/netns/" + nodeName)
	if err != nil {
		return err
	}
	defer h.Close()
	for {
		ls, err := h.LinkList()
		if err != nil {
			return err
		}
		count := 0
		for _, l := range ls {
			if l.Type() == "veth" {
				count++
			}
		}
		if count <= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s still holds %d veths after %v, want at most %d", nodeName, count, limit, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ForgetCached removes what libcni cached for the pod (its result and config), as a
// runtime that lost its state would.
func ForgetCached(cacheDir string, p Pod) error {
	m, err := filepath.Glob(filepath.Join(cacheDir, "results", "*-"+p.ID+"-*"))
	if err != nil {
		return err
	}
	if len(m) == 0 {
		return fmt.Errorf("no libcni cache entry for %s under %s", p.ID, cacheDir)
	}
	for _, f := range m {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	return nil
}
