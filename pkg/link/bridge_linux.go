package link

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BridgeSpec is what a bridge must be; MTU, VlanFiltering and the MAC apply when it is created.
type BridgeSpec struct {
	Name          string
	MTU           int
	Promisc       bool
	VlanFiltering bool
	// NoIPv6 creates the bridge with IPv6 disabled (before it is up, so it never sends
	// link-local DAD, MLD or router solicitations): for a network without IPv6 ranges. It
	// applies only when this call creates the bridge.
	NoIPv6 bool
	// IPv6 makes sure IPv6 is enabled on an existing bridge (one made with NoIPv6 for an
	// IPv4-only network, now shared by a network with IPv6 gateways).
	IPv6 bool
}

// Bridge is an ensured bridge. Created tells whether this call made it; a bridge made here
// has a fixed MAC (set at creation), so attaching ports never changes it.
type Bridge struct {
	*netlink.Bridge
	Created bool
}

// EnsureBridge finds the bridge or creates it, and makes sure it is up (and promiscuous when
// asked) with accept_ra=0. One link lookup when it exists; none beyond the create when not.
func (h *Handle) EnsureBridge(s BridgeSpec) (*Bridge, error) {
	l, err := h.LinkByName(s.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		br, err := h.createBridge(s)
		if err == nil {
			return br, h.bridgeSysctl(s.Name)
		}
		if !errors.Is(err, syscall.EEXIST) {
			return nil, err
		}
		// Made meanwhile by a concurrent ADD: use it.
		if l, err = h.LinkByName(s.Name); err != nil {
			return nil, fmt.Errorf("look up bridge %q: %w", s.Name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("look up bridge %q: %w", s.Name, err)
	}
	nb, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, fmt.Errorf("%q already exists but is not a bridge (it is a %s)", s.Name, l.Type())
	}
	if s.IPv6 {
		if err := h.Do(func() error { return ensureIPv6(s.Name) }); err != nil {
			return nil, err
		}
	}
	if s.Promisc && nb.Promisc == 0 {
		if err := h.SetPromiscOn(nb); err != nil {
			return nil, fmt.Errorf("set promiscuous mode on %q: %w", s.Name, err)
		}
		nb.Promisc = 1
	}
	if nb.Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(nb); err != nil {
			return nil, fmt.Errorf("set bridge %q up: %w", s.Name, err)
		}
		nb.Flags |= net.FlagUp
	}
	return &Bridge{Bridge: nb}, h.bridgeSysctl(s.Name)
}

func (h *Handle) createBridge(s BridgeSpec) (*Bridge, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = s.Name
	attrs.MTU = s.MTU
	if !s.NoIPv6 {
		attrs.Flags = net.FlagUp
	}
	attrs.HardwareAddr = RandomMAC(0)
	nb := &netlink.Bridge{LinkAttrs: attrs}
	if s.VlanFiltering {
		on := true
		nb.VlanFiltering = &on
	}
	// LinkAdd looks the new link up once to learn its index.
	if err := h.LinkAdd(nb); err != nil {
		if s.VlanFiltering && errors.Is(err, syscall.EOPNOTSUPP) {
			return nil, fmt.Errorf("create bridge %q with VLAN filtering (for vlan/vlanTrunk): this kernel does not support it (CONFIG_BRIDGE_VLAN_FILTERING): %w", s.Name, err)
		}
		return nil, fmt.Errorf("create bridge %q: %w", s.Name, err)
	}
	if s.Promisc {
		if err := h.SetPromiscOn(nb); err != nil {
			return nil, fmt.Errorf("set promiscuous mode on %q: %w", s.Name, err)
		}
		nb.Promisc = 1
	}
	if s.NoIPv6 {
		// Made down: IPv6 off first, then up, so no IPv6 packet ever leaves it.
		if err := h.Do(func() error { return disableIPv6(s.Name) }); err != nil {
			_ = h.LinkDel(nb)
			return nil, err
		}
		if err := h.LinkSetUp(nb); err != nil {
			_ = h.LinkDel(nb)
			return nil, fmt.Errorf("set bridge %q up: %w", s.Name, err)
		}
		nb.Flags |= net.FlagUp
	}
	return &Bridge{Bridge: nb, Created: true}, nil
}

// bridgeSysctl: the plugin owns the bridge's routes, so router advertisements are ignored.
func (h *Handle) bridgeSysctl(name string) error {
	err := h.Do(func() error { return WriteSysctl("net/ipv6/conf/"+name+"/accept_ra", "0") })
	if err != nil && !IsNotExist(err) {
		return err
	}
	return nil
}

// RandomMAC returns a random locally administered unicast MAC. A non-zero first byte replaces
// the random one: host-side veths use 0xfe so that a bridge whose MAC follows its lowest port
// never takes theirs.
func RandomMAC(first byte) net.HardwareAddr {
	m := make(net.HardwareAddr, 6)
	if _, err := rand.Read(m); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	m[0] = m[0]&0xfe | 0x02
	if first != 0 {
		m[0] = first
	}
	return m
}

// AddrConflictError says that an address on a link stands in the way of the one wanted.
type AddrConflictError struct {
	Link     string
	Have     *net.IPNet
	Want     *net.IPNet
	ForceKey string // the config key that allows replacing it
}

func (e *AddrConflictError) Error() string {
	return fmt.Sprintf("%q already has an IP address %s different from %s (set %s to replace it)",
		e.Link, e.Have, e.Want, e.ForceKey)
}

// EnsureAddrs gives l every address in want (gateway addresses of a bridge). An IPv4 address
// not in want, or an IPv6 address overlapping a wanted one, is a conflict: an error, or removed
// when force is set. It reports whether any address was added. One address dump.
func (h *Handle) EnsureAddrs(l netlink.Link, want []*net.IPNet, force bool, forceKey string) (bool, error) {
	have, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false, fmt.Errorf("list addresses of %q: %w", l.Attrs().Name, err)
	}
	isWanted := func(a *net.IPNet) bool {
		for _, w := range want {
			if a.String() == w.String() {
				return true
			}
		}
		return false
	}
	for _, a := range have {
		if isWanted(a.IPNet) {
			continue
		}
		for _, w := range want {
			v4 := w.IP.To4() != nil
			if v4 != (a.IP.To4() != nil) {
				continue
			}
			if !v4 && !a.Contains(w.IP) && !w.Contains(a.IP) {
				continue // IPv6: non-overlapping addresses may stay
			}
			if !force {
				return false, &AddrConflictError{Link: l.Attrs().Name, Have: a.IPNet, Want: w, ForceKey: forceKey}
			}
			if err := h.AddrDel(l, &a); err != nil {
				return false, fmt.Errorf("remove address %s from %q: %w", a.IPNet, l.Attrs().Name, err)
			}
			break
		}
	}
	added := false
	for _, w := range want {
		present := false
		for _, a := range have {
			present = present || a.IPNet.String() == w.String()
		}
		if present {
			continue
		}
		addr := &netlink.Addr{IPNet: w}
		if w.IP.To4() == nil {
			// The gateway is usable at once, not after a second of DAD on the bridge.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(l, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
			return false, fmt.Errorf("add address %s to %q: %w", w, l.Attrs().Name, err)
		}
		added = true
	}
	return added, nil
}

// PinMAC sets a link's MAC to its current value: a bridge then keeps it when ports come and go.
// A port-less bridge shows no MAC until a port lends it one: then the link is read again first.
// It returns the MAC now pinned.
func (h *Handle) PinMAC(l netlink.Link) (net.HardwareAddr, error) {
	mac := l.Attrs().HardwareAddr
	if isZeroMAC(mac) {
		cur, err := h.LinkByIndex(l.Attrs().Index)
		if err != nil {
			return nil, fmt.Errorf("read MAC of %q: %w", l.Attrs().Name, err)
		}
		mac = cur.Attrs().HardwareAddr
	}
	if err := h.LinkSetHardwareAddr(l, mac); err != nil {
		return nil, fmt.Errorf("set MAC of %q to %s: %w", l.Attrs().Name, mac, err)
	}
	l.Attrs().HardwareAddr = mac
	return mac, nil
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}

// MACFollowsPorts tells whether a bridge's MAC may change as ports join: one made elsewhere
// and seen without a MAC certainly will; one made here never does.
func (b *Bridge) MACFollowsPorts() bool { return !b.Created && isZeroMAC(b.HardwareAddr) }
