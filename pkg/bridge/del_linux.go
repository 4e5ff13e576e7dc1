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
// the interface's addresses, else (the engine) from the rules' comments. Deleting the veth
// waits on the kernel (an RCU grace period), so it runs while the IPAM plugin and the rule
// updates do.
func Del(args *skel.CmdArgs) error {
	n, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	ips := prevIPs(n, args.IfName)
	var errs []error
	var linkGone chan error
	if args.Netns != "" {
		found, del, err := podIface(args.Netns, args.IfName)
		if err != nil {
			errs = append(errs, err)
		}
		if len(ips) == 0 {
			ips = found
		}
		if del != nil {
			linkGone = make(chan error, 1)
			go func() { linkGone <- del() }()
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
	if linkGone != nil {
		if err := <-linkGone; err != nil {
			errs = append(errs, err)
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

// podIface finds the pod's interface and returns its global addresses and a func deleting it
// (its veth peer goes with it). A gone netns or interface gives no func and no error.
func podIface(netns, ifName string) ([]*current.IPConfig, func() error, error) {
	h, err := link.OpenHandle(netns)
	var gone ns.NSPathNotExistErr
	var unmounted ns.NSPathNotNSErr // the netns file outlived its mount
	if errors.As(err, &gone) || errors.As(err, &unmounted) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open netns %q: %w", netns, err)
	}
	l, err := h.LinkByName(ifName)
	var notFound netlink.LinkNotFoundError
	if err != nil {
		h.Close()
		if errors.As(err, &notFound) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("look up %q in %s: %w", ifName, netns, err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("list addresses of %q: %w", ifName, err)
	}
	var ips []*current.IPConfig
	for _, a := range addrs {
		if a.IP.IsGlobalUnicast() {
			ips = append(ips, &current.IPConfig{Address: net.IPNet{IP: a.IP, Mask: a.Mask}})
		}
	}
	del := func() error {
		defer h.Close()
		if err := h.LinkDel(l); err != nil {
			return fmt.Errorf("delete %q in %s: %w", ifName, netns, err)
		}
		return nil
	}
	return ips, del, nil
}
