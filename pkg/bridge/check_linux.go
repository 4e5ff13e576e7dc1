package bridge

import (
	"context"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cni-suite/cni-suite/pkg/link"
	"github.com/cni-suite/cni-suite/pkg/netfilter"
)

// Check verifies against prevResult that the bridge exists and is up, that a veth on it is the
// peer of the container interface, that the container interface holds the addresses and the
// routes, and that the masquerade rules are in place. Each error says what is missing.
func Check(args *skel.CmdArgs) error {
	n, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if n.IPAM.Type != "" {
		if err := invoke.DelegateCheck(context.TODO(), n.IPAM.Type, args.StdinData, nil); err != nil {
			return err
		}
	}
	if n.RawPrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult: it is missing", "")
	}
	if err := n.parsePrevResult(); err != nil {
		return err
	}
	res, err := current.NewResultFromResult(n.PrevResult)
	if err != nil {
		return fmt.Errorf("convert prevResult: %w", err)
	}
	host, err := link.OpenCurrent()
	if err != nil {
		return err
	}
	defer host.Close()
	pod, err := link.OpenHandle(args.Netns)
	if err != nil {
		return link.InvalidNetNS(args.Netns, fmt.Errorf("open netns %q: %w", args.Netns, err))
	}
	defer pod.Close()
	c := checker{n: n, args: args, res: res, host: host, pod: pod}
	for _, step := range []func() error{c.bridge, c.container, c.hostVeth, c.addresses, c.routes} {
		if err := step(); err != nil {
			return err
		}
	}
	if n.IPMasq && n.IPAM.Type != "" {
		if err := netfilter.CheckMasq(n.masq(args, res.IPs)); err != nil {
			return fmt.Errorf("ipMasq rules: %w", err)
		}
	}
	return nil
}

type checker struct {
	n         *NetConf
	args      *skel.CmdArgs
	res       *current.Result
	host, pod *link.Handle
	br, cont  netlink.Link
}

// find returns prevResult's interface named name in sandbox ("" for the host).
func (c *checker) find(name, sandbox string) *current.Interface {
	for _, i := range c.res.Interfaces {
		if i.Name == name && i.Sandbox == sandbox {
			return i
		}
	}
	return nil
}

func (c *checker) bridge() error {
	name := c.n.BrName
	want := c.find(name, "")
	if want == nil {
		return fmt.Errorf("prevResult lists no bridge interface %q", name)
	}
	l, err := c.host.LinkByName(name)
	if err != nil {
		return fmt.Errorf("bridge %q not found: %w", name, err)
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return fmt.Errorf("%q is a %s, not a bridge", name, l.Type())
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("bridge %q is down", name)
	}
	if want.Mac != "" && want.Mac != l.Attrs().HardwareAddr.String() {
		return fmt.Errorf("bridge %q has MAC %s, prevResult says %s", name, l.Attrs().HardwareAddr, want.Mac)
	}
	if promisc := l.Attrs().Promisc != 0; promisc != c.n.PromiscMode {
		return fmt.Errorf("bridge %q promiscuous mode is %v, promiscMode is %v", name, promisc, c.n.PromiscMode)
	}
	c.br = l
	return nil
}

func (c *checker) container() error {
	name, sb := c.args.IfName, c.args.Netns
	want := c.find(name, sb)
	if want == nil {
		return fmt.Errorf("prevResult lists no interface %q in sandbox %s", name, sb)
	}
	l, err := c.pod.LinkByName(name)
	if err != nil {
		return fmt.Errorf("container interface %q not found in %s: %w", name, sb, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return fmt.Errorf("container interface %q is a %s, not a veth", name, l.Type())
	}
	if want.Mac != "" && want.Mac != l.Attrs().HardwareAddr.String() {
		return fmt.Errorf("container interface %q has MAC %s, prevResult says %s", name, l.Attrs().HardwareAddr, want.Mac)
	}
	c.cont = l
	return nil
}

// hostVeth finds, among prevResult's host interfaces, the veth that is the container
// interface's peer and a port of the bridge.
func (c *checker) hostVeth() error {
	for _, i := range c.res.Interfaces {
		if i.Sandbox != "" || i.Name == c.n.BrName {
			continue
		}
		l, err := c.host.LinkByName(i.Name)
		if err != nil {
			return fmt.Errorf("host interface %q of prevResult not found: %w", i.Name, err)
		}
		a := l.Attrs()
		if _, ok := l.(*netlink.Veth); !ok || a.Index != c.cont.Attrs().ParentIndex || a.ParentIndex != c.cont.Attrs().Index {
			continue
		}
		if a.MasterIndex != c.br.Attrs().Index {
			return fmt.Errorf("host veth %q is not attached to bridge %q", i.Name, c.n.BrName)
		}
		if i.Mac != "" && i.Mac != a.HardwareAddr.String() {
			return fmt.Errorf("host veth %q has MAC %s, prevResult says %s", i.Name, a.HardwareAddr, i.Mac)
		}
		return nil
	}
	return fmt.Errorf("no host veth of prevResult is the peer of %q on bridge %q", c.args.IfName, c.n.BrName)
}

func (c *checker) addresses() error {
	have, err := c.pod.AddrList(c.cont, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %q: %w", c.args.IfName, err)
	}
	for _, ipc := range c.res.IPs {
		found := false
		for _, a := range have {
			found = found || (a.IP.Equal(ipc.Address.IP) && a.Mask.String() == ipc.Address.Mask.String())
		}
		if !found {
			return fmt.Errorf("address %s is missing on %q", ipc.Address.String(), c.args.IfName)
		}
	}
	return nil
}

// routes: every prevResult route must be in the pod's routing table (others may be added by
// later plugins).
func (c *checker) routes() error {
	for _, r := range c.res.Routes {
		family := netlink.FAMILY_V6
		if r.Dst.IP.To4() != nil {
			family = netlink.FAMILY_V4
		}
		dst := r.Dst
		filter := &netlink.Route{Dst: &dst}
		mask := netlink.RT_FILTER_DST
		if r.Table != nil {
			filter.Table = *r.Table
			mask |= netlink.RT_FILTER_TABLE
		}
		routes, err := c.pod.RouteListFiltered(family, filter, mask)
		if err != nil {
			return fmt.Errorf("list routes in %s: %w", c.args.Netns, err)
		}
		var found []netlink.Route
		for _, rt := range routes {
			if viaGW(rt, r.GW) {
				found = append(found, rt)
			}
		}
		if len(found) == 0 {
			via := ""
			if r.GW != nil {
				via = " via " + r.GW.String()
			}
			return fmt.Errorf("route to %s%s is missing in %s", r.Dst.String(), via, c.args.Netns)
		}
	}
	return nil
}

// viaGW: the route goes through gw (any gateway when gw is nil), also as one of its ECMP
// next hops (IPv6 merges routes to the same destination into one).
func viaGW(rt netlink.Route, gw net.IP) bool {
	if gw == nil || gw.Equal(rt.Gw) {
		return true
	}
	for _, nh := range rt.MultiPath {
		if gw.Equal(nh.Gw) {
			return true
		}
	}
	return false
}
