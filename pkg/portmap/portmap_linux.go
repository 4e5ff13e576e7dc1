package portmap

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
)

// enableRouteLocalnet sets route_localnet on the host interface that routes to the container
// (the bridge), so that 127.0.0.1:hostPort, DNATed to the container, may leave the host
// through it. It reads the sysctl first and writes only when it is not set yet.
func enableRouteLocalnet(container netip.Addr) error {
	routes, err := netlink.RouteGet(net.IP(container.AsSlice()))
	if err != nil || len(routes) == 0 {
		return nil // no route to the container: nothing to enable, as the reference does
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return nil
	}
	path := "/proc/sys/net/ipv4/conf/" + l.Attrs().Name + "/route_localnet"
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(path, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable route_localnet on %s: %w", l.Attrs().Name, err)
	}
	return nil
}
