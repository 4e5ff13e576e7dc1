package netfilter

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DeleteUDPConntrack removes the conntrack entries of one family for UDP traffic to any of the
// host ports, in the caller's network namespace (one netlink dump for all ports). A client
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
	if len(filters) == 0 {
		return nil
	}
	fam := netlink.InetFamily(unix.AF_INET)
	if f == IPv6 {
		fam = unix.AF_INET6
	}
	if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, fam, filters...); err != nil {
		return fmt.Errorf("delete %s UDP conntrack entries for ports %v: %w", f, hostPorts, err)
	}
	return nil
}
