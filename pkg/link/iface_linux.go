package link

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Route is a route out of a configured interface.
type Route struct {
	Dst      net.IPNet
	GW       net.IP
	Priority int
	Table    int  // 0: main
	Scope    *int // nil: universe
	MTU      int
	AdvMSS   int
}

// IfaceConfig is the layer-3 setup of a pod interface.
type IfaceConfig struct {
	Addrs  []*net.IPNet
	Routes []Route
	// EnableDAD runs IPv6 duplicate address detection and waits for it; otherwise addresses
	// are usable at once (no DAD, no wait).
	EnableDAD bool
	// DADTimeout bounds the wait when EnableDAD (default 5s).
	DADTimeout time.Duration
	// NoRouterSolicit stops the interface from soliciting routers when it comes up (IPv6 stays
	// on: it keeps its link-local address and still takes unsolicited advertisements): for a
	// network without IPv6, whose gateway sends none. Each solicitation would be flooded to
	// every port of the bridge.
	NoRouterSolicit bool
}

// ConfigureIface sets the interface's sysctls (one switch into the netns), adds the addresses,
// brings it up (announcing the addresses: gratuitous ARP, unsolicited NA) and adds the routes.
func (h *Handle) ConfigureIface(l netlink.Link, c IfaceConfig) error {
	name := l.Attrs().Name
	hasV6 := false
	for _, a := range c.Addrs {
		hasV6 = hasV6 || a.IP.To4() == nil
	}
	if err := h.Do(func() error { return ifaceSysctls(name, hasV6, c.EnableDAD, c.NoRouterSolicit) }); err != nil {
		return err
	}
	for _, a := range c.Addrs {
		addr := &netlink.Addr{IPNet: a}
		if a.IP.To4() == nil && !c.EnableDAD {
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, addr); err != nil {
			return fmt.Errorf("add address %s to %q: %w", a, name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %q up: %w", name, err)
	}
	if c.EnableDAD && hasV6 {
		timeout := c.DADTimeout
		if timeout == 0 {
			timeout = 5 * time.Second
		}
		if err := h.waitDAD(l, c.Addrs, timeout); err != nil {
			return err
		}
	}
	for _, r := range c.Routes {
		dst := r.Dst
		nr := &netlink.Route{Dst: &dst, LinkIndex: l.Attrs().Index, Gw: r.GW, Priority: r.Priority,
			Table: r.Table, MTU: r.MTU, AdvMSS: r.AdvMSS}
		if r.Scope != nil {
			nr.Scope = netlink.Scope(*r.Scope)
		}
		if err := h.RouteAddEcmp(nr); err != nil {
			return fmt.Errorf("add route %s via %v dev %s: %w", &r.Dst, r.GW, name, err)
		}
	}
	return nil
}

// ifaceSysctls runs inside the interface's netns.
func ifaceSysctls(name string, hasV6, dad, noRS bool) error {
	conf6 := "net/ipv6/conf/" + name + "/"
	// Best effort, as these keys are absent without IPv6.
	if noRS {
		_ = WriteSysctl(conf6+"router_solicitations", "0")
	}
	if dad {
		_ = WriteSysctl(conf6+"enhanced_dad", "1")
		_ = WriteSysctl(conf6+"accept_dad", "1")
	} else {
		_ = WriteSysctl(conf6+"accept_dad", "0")
	}
	// Gratuitous ARP when the interface comes up.
	_ = WriteSysctl("net/ipv4/conf/"+name+"/arp_notify", "1")
	if !hasV6 {
		return nil
	}
	for _, n := range []string{"lo", name} {
		if err := WriteSysctl("net/ipv6/conf/"+n+"/disable_ipv6", "0"); err != nil && !IsNotExist(err) {
			return fmt.Errorf("enable IPv6 on %q: %w", n, err)
		}
	}
	if err := WriteSysctl(conf6+"keep_addr_on_down", "1"); err != nil {
		return fmt.Errorf("enable keep_addr_on_down on %q: %w", name, err)
	}
	// Unsolicited neighbour advertisement once the addresses are usable.
	_ = WriteSysctl(conf6+"ndisc_notify", "1")
	return nil
}

// waitDAD waits, on address events rather than by polling, until no IPv6 address of l among
// addrs is tentative; a failed DAD or the timeout is an error.
func (h *Handle) waitDAD(l netlink.Link, addrs []*net.IPNet, timeout time.Duration) error {
	pending := map[string]bool{}
	for _, a := range addrs {
		if a.IP.To4() == nil {
			pending[a.IP.String()] = true
		}
	}
	ch := make(chan netlink.AddrUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	nsh := netns.NsHandle(int(h.NS.Fd()))
	errc := make(chan error, 1)
	opts := netlink.AddrSubscribeOptions{Namespace: &nsh, ListExisting: true,
		ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		}}
	if err := netlink.AddrSubscribeWithOptions(ch, done, opts); err != nil {
		return fmt.Errorf("watch addresses of %q: %w", l.Attrs().Name, err)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(pending) > 0 {
		select {
		case u, ok := <-ch:
			if !ok {
				return errors.New("address watch closed while waiting for DAD")
			}
			ip := u.LinkAddress.IP.String()
			if u.LinkIndex != l.Attrs().Index || !pending[ip] || !u.NewAddr {
				continue
			}
			if u.Flags&unix.IFA_F_DADFAILED != 0 {
				return fmt.Errorf("address %s on %q failed duplicate address detection", ip, l.Attrs().Name)
			}
			if u.Flags&unix.IFA_F_TENTATIVE == 0 {
				delete(pending, ip)
			}
		case err := <-errc:
			return fmt.Errorf("watch addresses of %q: %w", l.Attrs().Name, err)
		case <-timer.C:
			return fmt.Errorf("addresses of %q still tentative after %s", l.Attrs().Name, timeout)
		}
	}
	return nil
}
