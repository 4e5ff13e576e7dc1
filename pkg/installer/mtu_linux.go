package installer

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
)

// DefaultRouteMTU finds the MTU pods should use: that of the link carrying the node's default
// route (IPv4 first, then IPv6; the lowest metric wins; for a multipath route, the smallest of
// its links; a route's own mtu metric when lower). h is a netlink handle in the node's network
// namespace (nil: the caller's). It returns 0 and no error when there is no default route.
func DefaultRouteMTU(h *netlink.Handle) (mtu int, via string, err error) {
	if h == nil {
		if h, err = netlink.NewHandle(); err != nil {
			return 0, "", fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
	}
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := h.RouteListFiltered(family, &netlink.Route{}, netlink.RT_FILTER_DST)
		if err != nil {
			return 0, "", fmt.Errorf("list default routes: %w", err)
		}
		var best *netlink.Route
		for i := range routes {
			if best == nil || routes[i].Priority < best.Priority {
				best = &routes[i]
			}
		}
		if best == nil {
			continue
		}
		idx := []int{best.LinkIndex}
		if len(best.MultiPath) > 0 {
			idx = idx[:0]
			for _, nh := range best.MultiPath {
				idx = append(idx, nh.LinkIndex)
			}
		}
		var names []string
		for _, i := range idx {
			if i == 0 {
				continue
			}
			l, err := h.LinkByIndex(i)
			if err != nil {
				return 0, "", fmt.Errorf("default route link %d: %w", i, err)
			}
			if m := l.Attrs().MTU; m > 0 && (mtu == 0 || m < mtu) {
				mtu = m
			}
			names = append(names, l.Attrs().Name)
		}
		if best.MTU > 0 && (mtu == 0 || best.MTU < mtu) {
			mtu = best.MTU
		}
		if mtu > 0 {
			return mtu, strings.Join(names, ","), nil
		}
	}
	return 0, "", nil
}
