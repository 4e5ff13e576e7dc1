package link

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/vishvananda/netlink"
)

// VethSpec describes a veth pair: the host end in the host handle's netns, attached to a
// bridge, and the peer (the pod's interface) in another netns.
type VethSpec struct {
	PeerName string           // the pod interface name (CNI_IFNAME)
	PeerMAC  net.HardwareAddr // nil: the kernel picks one
	MTU      int              // both ends; 0: kernel default
	MasterIx int              // bridge ifindex for the host end; 0: none
	// HostNoIPv6 disables IPv6 on the host end before it comes up, so it never sends
	// link-local DAD, MLD or router solicitations (each flooded to every bridge port):
	// for a network without IPv6 ranges.
	HostNoIPv6 bool
}

// Veth is a created pair. Host carries index and MAC; Peer is the pod-side link as found in
// the peer netns (index and MAC filled).
type Veth struct {
	Host *netlink.Veth
	Peer netlink.Link
}

// ErrPeerExists says the pod already has an interface with the wanted name.
var ErrPeerExists = errors.New("already exists")

// RandomVethName returns "veth" and 8 random hex digits (NetworkManager ignores veth*).
func RandomVethName() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "veth" + hex.EncodeToString(b)
}

// AddVeth creates the pair from the host side, with the peer created directly in the peer
// netns: no link is moved, the host end is created up and attached to its master, and each
// end is looked up once (the host end by LinkAdd, the peer by name in its netns). With
// HostNoIPv6 the host end is made down and brought up once IPv6 is off.
// A peer name already taken in the pod gives an error wrapping ErrPeerExists.
func (h *Handle) AddVeth(peer *Handle, s VethSpec) (*Veth, error) {
	var host *netlink.Veth
	for try := 0; ; try++ {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = RandomVethName()
		attrs.MTU = s.MTU
		if !s.HostNoIPv6 {
			attrs.Flags = net.FlagUp
		}
		attrs.HardwareAddr = RandomMAC(0xfe)
		host = &netlink.Veth{LinkAttrs: attrs, PeerName: s.PeerName, PeerNamespace: peer.Fd(), PeerHardwareAddr: s.PeerMAC}
		err := h.LinkAdd(host)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EEXIST) {
			return nil, fmt.Errorf("create veth pair %s/%s: %w", attrs.Name, s.PeerName, err)
		}
		// EEXIST: either the pod has PeerName already or the random host name is taken.
		if _, lerr := peer.LinkByName(s.PeerName); lerr == nil {
			return nil, fmt.Errorf("container interface %q: %w", s.PeerName, ErrPeerExists)
		}
		if try == 9 {
			return nil, fmt.Errorf("create veth pair for %s: no free host name after 10 tries: %w", s.PeerName, err)
		}
	}
	v := &Veth{Host: host}
	fail := func(err error) (*Veth, error) {
		_ = h.LinkDel(host) // removes both ends
		return nil, err
	}
	if host.Index == 0 {
		return fail(fmt.Errorf("find new veth %q: not found after creation", host.Name))
	}
	p, err := peer.LinkByName(s.PeerName)
	if err != nil {
		return fail(fmt.Errorf("find %q in the pod netns: %w", s.PeerName, err))
	}
	v.Peer = p
	if s.MasterIx != 0 {
		if err := h.LinkSetMasterByIndex(host, s.MasterIx); err != nil {
			return fail(fmt.Errorf("attach %q to bridge: %w", host.Name, err))
		}
		host.MasterIndex = s.MasterIx
	}
	err = h.Do(func() error {
		if s.HostNoIPv6 {
			if err := disableIPv6(host.Name); err != nil {
				return err
			}
		}
		return WriteSysctl("net/ipv6/conf/"+host.Name+"/accept_ra", "0")
	})
	if err != nil && !IsNotExist(err) {
		return fail(err)
	}
	if s.HostNoIPv6 {
		if err := h.LinkSetUp(host); err != nil {
			return fail(fmt.Errorf("set %q up: %w", host.Name, err))
		}
		host.Flags |= net.FlagUp
	}
	return v, nil
}
