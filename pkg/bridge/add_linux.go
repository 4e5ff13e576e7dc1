package bridge

import (
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/cni-suite/cni-suite/pkg/link"
)

// attachment is one ADD in progress: the config, one netlink handle per netns, and the undo
// steps of what it made so far.
type attachment struct {
	n    *NetConf
	args *skel.CmdArgs
	host *link.Handle // the node's netns, where the plugin runs
	pod  *link.Handle
	undo []func() error
}

// Add creates the attachment and prints its result; on failure everything it made is undone
// (the bridge, its gateway addresses and forwarding are shared and stay).
func Add(args *skel.CmdArgs) error {
	n, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if err := n.validateAdd(); err != nil {
		return err
	}
	a := &attachment{n: n, args: args}
	if a.host, err = link.OpenCurrent(); err != nil {
		return err
	}
	defer a.host.Close()
	if a.pod, err = link.OpenHandle(args.Netns); err != nil {
		return link.InvalidNetNS(args.Netns, fmt.Errorf("open netns %q: %w", args.Netns, err))
	}
	defer a.pod.Close()
	res, err := a.add()
	var out types.Result
	if err == nil {
		// Converting down can fail (0.2.0 needs an IP): that is a failed ADD too.
		out, err = res.GetAsVersion(n.CNIVersion)
	}
	if err != nil {
		a.rollback()
		return err
	}
	return out.Print()
}

func (a *attachment) add() (*current.Result, error) {
	n := a.n
	// IPAM first: a bad IPAM config, a missing IPAM plugin or a full range fails the ADD before
	// anything is made on the node (the reference creates the bridge and veth first and leaves
	// them behind).
	var ipamRes *current.Result
	if n.IPAM.Type != "" {
		var err error
		if ipamRes, err = a.ipamAdd(); err != nil {
			return nil, err
		}
	}
	v4, v6 := ipFamilies(ipamRes)
	// An IPv4-only network: no IPv6 on the interfaces it makes on the node (each new port's
	// link-local traffic would otherwise be flooded to every port of the bridge).
	noIPv6 := v4 && !v6
	br, err := a.host.EnsureBridge(link.BridgeSpec{Name: n.BrName, MTU: n.MTU, Promisc: n.PromiscMode,
		VlanFiltering: n.vlanFiltering(), NoIPv6: noIPv6, IPv6: v6 && n.IsGW})
	if err != nil {
		return nil, fmt.Errorf("bridge %q: %w", n.BrName, err)
	}
	veth, err := a.addVeth(br, noIPv6)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Interfaces: []*current.Interface{
		ifBridge:    {Name: br.Name, Mac: br.HardwareAddr.String()},
		ifHost:      {Name: veth.Host.Name, Mac: veth.Host.HardwareAddr.String()},
		ifContainer: {Name: veth.Peer.Attrs().Name, Mac: veth.Peer.Attrs().HardwareAddr.String(), Sandbox: a.args.Netns},
	}}
	if n.MacSpoofChk {
		if err := a.spoofCheck(veth); err != nil {
			return nil, err
		}
	}
	if ipamRes == nil {
		return res, a.layer2Only(veth.Peer)
	}
	gateways := applyIPAM(n, res, ipamRes)
	if err := a.pod.ConfigureIface(veth.Peer, podConfig(n, res)); err != nil {
		return nil, fmt.Errorf("configure %q in %s: %w", a.args.IfName, a.args.Netns, err)
	}
	pinned := false
	if n.IsGW {
		if pinned, err = a.setupGateways(br, gateways, res); err != nil {
			return nil, err
		}
	}
	if n.IPMasq {
		if err := a.masquerade(res.IPs); err != nil {
			return nil, err
		}
	}
	if !pinned && (br.MACFollowsPorts() || (!br.Created && !n.IsGW)) {
		// A bridge made elsewhere may follow its lowest port's MAC: report the current one.
		// (With isGateway its MAC was pinned when its gateway address was added.)
		if l, err := a.host.LinkByIndex(br.Index); err == nil {
			res.Interfaces[ifBridge].Mac = l.Attrs().HardwareAddr.String()
		}
	}
	return res, nil
}

// rollback undoes this ADD's steps, newest first; failures are logged, the ADD error stands.
func (a *attachment) rollback() {
	for i := len(a.undo) - 1; i >= 0; i-- {
		if err := a.undo[i](); err != nil {
			fmt.Fprintf(os.Stderr, "bridge: rollback after failed ADD: %v\n", err)
		}
	}
}

// addVeth makes the pair (container end CNI_IFNAME in the pod, host end on the bridge) and
// configures the bridge port.
func (a *attachment) addVeth(br *link.Bridge, noIPv6 bool) (*link.Veth, error) {
	n := a.n
	v, err := a.host.AddVeth(a.pod, link.VethSpec{PeerName: a.args.IfName, PeerMAC: n.MAC, MTU: n.MTU,
		MasterIx: br.Index, HostNoIPv6: noIPv6})
	if errors.Is(err, link.ErrPeerExists) {
		return nil, fmt.Errorf("interface %q already exists in netns %s", a.args.IfName, a.args.Netns)
	}
	if err != nil {
		return nil, err
	}
	a.undo = append(a.undo, func() error { return a.host.LinkDel(v.Host) })
	port := link.PortSpec{Hairpin: n.HairpinMode, Isolated: n.PortIsolation, Vlan: n.Vlan, Trunk: n.Vlans, PreserveDefaultVlan: n.PreserveDefaultVlan}
	if err := a.host.ConfigurePort(br.Bridge, v.Host, port); err != nil {
		return nil, err
	}
	return v, nil
}

func (a *attachment) spoofCheck(v *link.Veth) error {
	sc := link.SpoofCheck{HostIface: v.Host.Name, MAC: v.Peer.Attrs().HardwareAddr, ID: spoofID(a.args.ContainerID, a.args.IfName)}
	if err := sc.Setup(); err != nil {
		return err
	}
	a.undo = append(a.undo, sc.Teardown)
	return nil
}

// layer2Only: without IPAM the container interface is only brought up (unless disabled).
func (a *attachment) layer2Only(peer netlink.Link) error {
	if a.n.DisableContainerInterface {
		return nil
	}
	if err := a.pod.LinkSetUp(peer); err != nil {
		return fmt.Errorf("set %q up: %w", a.args.IfName, err)
	}
	return nil
}
