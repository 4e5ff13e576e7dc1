package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/invoke"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cni-suite/cni-suite/pkg/link"
	"github.com/cni-suite/cni-suite/pkg/netfilter"
)

// ipamAdd runs the IPAM plugin; its reservation is released if the ADD fails later.
func (a *attachment) ipamAdd() (*current.Result, error) {
	typ, conf := a.n.IPAM.Type, a.args.StdinData
	r, err := invoke.DelegateAdd(context.TODO(), typ, conf, nil)
	if err != nil {
		return nil, err
	}
	a.undo = append(a.undo, func() error { return invoke.DelegateDel(context.TODO(), typ, conf, nil) })
	res, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, fmt.Errorf("convert the %s result: %w", typ, err)
	}
	if len(res.IPs) == 0 {
		return nil, fmt.Errorf("IPAM plugin %s returned no IP config", typ)
	}
	return res, nil
}

// setupGateways gives the bridge (or the VLAN gateway interface) the gateway addresses and
// turns forwarding on. It reports whether it pinned the bridge's MAC.
func (a *attachment) setupGateways(br *link.Bridge, gws []*net.IPNet, res *current.Result) (bool, error) {
	if len(gws) == 0 {
		return false, nil
	}
	target := netlink.Link(br.Bridge)
	if a.n.Vlan != 0 {
		vl, err := a.vlanGateway(br)
		if err != nil {
			return false, err
		}
		target = vl
		res.Interfaces = append(res.Interfaces, &current.Interface{Name: vl.Attrs().Name, Mac: vl.Attrs().HardwareAddr.String()})
	}
	added, err := a.host.EnsureAddrs(target, gws, a.n.ForceAddress, "forceAddress")
	if err != nil {
		return false, fmt.Errorf("gateway address on %q: %w", target.Attrs().Name, err)
	}
	pinned := false
	if added && !(br.Created && target == netlink.Link(br.Bridge)) {
		// Keep the MAC the gateway now answers with, whatever ports come and go.
		mac, err := a.host.PinMAC(target)
		if err != nil {
			return false, err
		}
		pinned = target == netlink.Link(br.Bridge)
		if pinned {
			res.Interfaces[ifBridge].Mac = mac.String()
		}
	}
	v4, v6 := false, false
	for _, g := range gws {
		v4, v6 = v4 || g.IP.To4() != nil, v6 || g.IP.To4() == nil
	}
	if err := link.EnableForwarding(v4, v6); err != nil {
		return false, fmt.Errorf("enable forwarding: %w", err)
	}
	return pinned, nil
}

// vlanGateway finds or makes "<bridge>.<vlan>": one end of a host veth pair whose other end is
// a port of the bridge in the VLAN, carrying the gateway addresses for that VLAN.
func (a *attachment) vlanGateway(br *link.Bridge) (netlink.Link, error) {
	name := fmt.Sprintf("%s.%d", br.Name, a.n.Vlan)
	l, err := a.host.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if err == nil || !errors.As(err, &notFound) {
		return l, err
	}
	v, err := a.host.AddVeth(a.host, link.VethSpec{PeerName: name, MTU: br.MTU, MasterIx: br.Index})
	if errors.Is(err, link.ErrPeerExists) {
		return a.host.LinkByName(name) // made meanwhile by a concurrent ADD
	}
	if err != nil {
		return nil, fmt.Errorf("create vlan gateway %q: %w", name, err)
	}
	port := link.PortSpec{Vlan: a.n.Vlan, PreserveDefaultVlan: a.n.PreserveDefaultVlan}
	if err := a.host.ConfigurePort(br.Bridge, v.Host, port); err != nil {
		_ = a.host.LinkDel(v.Host)
		return nil, fmt.Errorf("create vlan gateway %q: %w", name, err)
	}
	if err := a.host.LinkSetUp(v.Peer); err != nil {
		_ = a.host.LinkDel(v.Host)
		return nil, fmt.Errorf("set %q up: %w", name, err)
	}
	return v.Peer, nil
}

// masquerade installs the ipMasq rules; they are removed if the ADD fails later.
func (a *attachment) masquerade(ips []*current.IPConfig) error {
	m := a.n.masq(a.args, ips)
	a.undo = append(a.undo, func() error { return netfilter.TeardownMasq(m) })
	if err := netfilter.SetupMasq(m); err != nil {
		return fmt.Errorf("set up ipMasq: %w", err)
	}
	return nil
}
