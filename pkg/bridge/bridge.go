package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cni-suite/cni-suite/pkg/netfilter"
)

// Funcs are the plugin's verbs, for skel.PluginMainFuncs.
var Funcs = skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}

// GC delegates to the IPAM plugin and removes the masquerade rules of every container of this
// network that is not in cni.dev/valid-attachments. It tries both and reports every failure.
func GC(args *skel.CmdArgs) error {
	n, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	var errs []error
	if n.IPAM.Type != "" {
		if err := invoke.DelegateGC(context.TODO(), n.IPAM.Type, args.StdinData, nil); err != nil {
			errs = append(errs, err)
		}
	}
	if n.IPMasq {
		keep := make([]netfilter.Attachment, 0, len(n.ValidAttachments))
		for _, a := range n.ValidAttachments {
			keep = append(keep, netfilter.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
		}
		if err := netfilter.GCMasq(n.masqBackend(), n.Name, keep); err != nil {
			errs = append(errs, fmt.Errorf("garbage-collect masquerade rules: %w", err))
		}
	}
	return joinErrors(errs)
}

// Status: the bridge can work when its IPAM plugin can.
func Status(args *skel.CmdArgs) error {
	n, err := Parse(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	if n.IPAM.Type == "" {
		return nil
	}
	return invoke.DelegateStatus(context.TODO(), n.IPAM.Type, args.StdinData, nil)
}

// masq is the masquerade description of one attachment with the given addresses.
func (n *NetConf) masq(args *skel.CmdArgs, ips []*current.IPConfig) netfilter.Masq {
	m := netfilter.Masq{Backend: n.masqBackend(), Network: n.Name, ContainerID: args.ContainerID, IfName: args.IfName}
	for _, ipc := range ips {
		if p, ok := toPrefix(ipc.Address); ok {
			m.IPs = append(m.IPs, p)
		}
	}
	return m
}

func toPrefix(a net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ip = ip.Unmap()
	ones, bits := a.Mask.Size()
	if ip.Is4() && bits == 128 {
		ones -= 96
	}
	return netip.PrefixFrom(ip, ones), true
}

// joinErrors keeps a single CNI error as it is (its code matters), else joins them.
func joinErrors(errs []error) error {
	switch len(errs) {
	case 0:
		return nil
	case 1:
		return errs[0]
	}
	var te *types.Error
	for _, e := range errs {
		if errors.As(e, &te) {
			return types.NewError(te.Code, errors.Join(errs...).Error(), te.Details)
		}
	}
	return errors.Join(errs...)
}
