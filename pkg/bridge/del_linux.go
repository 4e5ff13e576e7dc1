package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-suite/cni-suite/pkg/link"
	"github.com/cni-suite/cni-suite/pkg/netfilter"
)

// Del removes the container interface (when the netns is still there), releases the IPAM
// reservation and removes the spoof check and masquerade rules. Every step runs even when
// another failed, and nothing left to remove is success: DEL is idempotent and works without
// the netns and without prevResult. The masquerade rules are found from prevResult, else from
// the interface's addresses, else (the engine) from the rules' comments.
func Del(args *skel.CmdArgs) error {
	n, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	ips := prevIPs(n, args.IfName)
	var errs []error
	if args.Netns != "" {
		found, err := delPodIface(args.Netns, args.IfName)
		if err != nil {
			errs = append(errs, err)
		}
		if len(ips) == 0 {
			ips = found
		}
	}
	if n.IPAM.Type != "" {
		if err := invoke.DelegateDel(context.TODO(), n.IPAM.Type, args.StdinData, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if n.MacSpoofChk {
		if err := (link.SpoofCheck{ID: spoofID(args.ContainerID, args.IfName)}).Teardown(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.IPMasq && n.IPAM.Type != "" {
		if err := netfilter.TeardownMasq(n.masq(args, ips)); err != nil {
			errs = append(errs, fmt.Errorf("remove ipMasq rules: %w", err))
		}
	}
	return joinErrors(errs)
}

// prevIPs are prevResult's addresses of the container interface; none when prevResult is
// absent or undecodable (DEL must not fail on it).
func prevIPs(n *NetConf, ifName string) []*current.IPConfig {
	if n.parsePrevResult() != nil || n.PrevResult == nil {
		return nil
	}
	r, err := current.NewResultFromResult(n.PrevResult)
	if err != nil {
		return nil
	}
	var out []*current.IPConfig
	for _, ipc := range r.IPs {
		if ipc.Interface == nil || (*ipc.Interface < len(r.Interfaces) && r.Interfaces[*ipc.Interface].Name == ifName) {
			out = append(out, ipc)
		}
	}
	return out
}

// delPodIface deletes the pod's interface (its veth peer goes with it) and returns its global
// addresses. A gone netns or interface is not an error.
func delPodIface(netns, ifName string) ([]*current.IPConfig, error) {
	h, err := link.OpenHandle(netns)
	var gone ns.NSPathNotExistErr
	if errors.As(err, &gone) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open netns %q: %w", netns, err)
	}
	defer h.Close()
	l, err := h.LinkByName(ifName)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %q in %s: %w", ifName, netns, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %q: %w", ifName, err)
	}
	if err := h.LinkDel(l); err != nil {
		return nil, fmt.Errorf("delete %q in %s: %w", ifName, netns, err)
	}
	var ips []*current.IPConfig
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() {
			ips = append(ips, &current.IPConfig{Address: net.IPNet{IP: a.IP, Mask: a.Mask}})
		}
	}
	return ips, nil
}
