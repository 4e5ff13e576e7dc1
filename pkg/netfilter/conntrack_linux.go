package netfilter

import (
	"bytes"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// conntrackDumps counts the conntrack table dumps DeleteUDPConntrack made (for tests).
var conntrackDumps atomic.Int64

// conntrackEmpty tells whether the caller's network namespace tracks no connection at all
// (nf_conntrack_count is per netns; an absent key means conntrack is not loaded, so nothing is
// tracked). Then there is nothing to delete, and the dump, which walks the whole host-wide
// conntrack hash (~10 ms per family on a busy 2-core node, even for an empty netns), is skipped.
// An unreadable count says nothing: the dump is made.
func conntrackEmpty() bool {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return os.IsNotExist(err)
	}
	return bytes.Equal(bytes.TrimSpace(b), []byte("0"))
}

// DeleteUDPConntrack removes the conntrack entries of one family for UDP traffic to any of the
// host ports, in the caller's network namespace (one netlink dump for all ports, none when the netns tracks no connection). A client
// sending to a hostPort before the mapping existed (or to a pod since deleted) otherwise keeps
// its stale entry, and its datagrams keep missing the new DNAT.
func DeleteUDPConntrack(f Family, hostPorts []int) error {
	var filters []netlink.CustomConntrackFilter
	seen := map[int]bool{}
	for _, p := range hostPorts {
		if seen[p] {
			continue
		}
		seen[p] = true
		flt := &netlink.ConntrackFilter{}
		if err := flt.AddProtocol(unix.IPPROTO_UDP); err != nil {
			return err
		}
		if err := flt.AddPort(netlink.ConntrackOrigDstPort, uint16(p)); err != nil {
			return err
		}
		filters = append(filters, flt)
	}
	if len(filters) == 0 || conntrackEmpty() {
		return nil
	}
	conntrackDumps.Add(1)
	fam := netlink.InetFamily(unix.AF_INET)
	if f == IPv6 {
		fam = unix.AF_INET6
	}
	// One socket for the dump and every deletion (the package-level call opens one per
	// request): each NETLINK_NETFILTER socket closed takes nf_tables' commit mutex and waits
	// for pending rule destruction, an RCU grace period after a deleting commit.
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("delete %s UDP conntrack entries: netlink socket: %w", f, err)
	}
	defer h.Close()
	if _, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters...); err != nil {
		return fmt.Errorf("delete %s UDP conntrack entries for ports %v: %w", f, hostPorts, err)
	}
	return nil
}
