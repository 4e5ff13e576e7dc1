package bridge

import (
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/cni-suite/cni-suite/pkg/link"
)

// Interface indexes in the result, as the reference lays them out.
const (
	ifBridge    = 0
	ifHost      = 1
	ifContainer = 2
)

// applyIPAM copies the IPAM result into res, points every IP at the container interface,
// fills in gateways (first address of the subnet when IPAM gave none and isGateway) and adds a
// default route per family when isDefaultGateway. It returns the bridge's gateway addresses.
func applyIPAM(n *NetConf, res, ipam *current.Result) []*net.IPNet {
	res.IPs, res.Routes, res.DNS = ipam.IPs, ipam.Routes, ipam.DNS
	var gws []*net.IPNet
	hasDefault := map[bool]bool{} // by "is IPv4"
	for _, r := range res.Routes {
		if r.GW != nil && ones(r.Dst) == 0 {
			hasDefault[r.Dst.IP.To4() != nil] = true
		}
	}
	for _, ipc := range res.IPs {
		ipc.Interface = current.Int(ifContainer)
		v4 := ipc.Address.IP.To4() != nil
		if ipc.Gateway == nil && n.IsGW {
			ipc.Gateway = firstHost(ipc.Address)
		}
		if n.IsDefaultGW && !hasDefault[v4] {
			res.Routes = append(res.Routes, &types.Route{Dst: defaultNet(v4), GW: ipc.Gateway})
			hasDefault[v4] = true
		}
		if n.IsGW {
			gws = append(gws, &net.IPNet{IP: ipc.Gateway, Mask: ipc.Address.Mask})
		}
	}
	if n.DNS.Nameservers != nil || n.DNS.Search != nil || n.DNS.Options != nil || n.DNS.Domain != "" {
		res.DNS = n.DNS
	}
	return gws
}

// podConfig is the container interface's layer 3: its addresses, and its routes with the
// family's first gateway where a route names none.
func podConfig(n *NetConf, res *current.Result) link.IfaceConfig {
	c := link.IfaceConfig{EnableDAD: n.EnableDad}
	v4, v6 := ipFamilies(res)
	c.NoRouterSolicit = v4 && !v6
	gw := map[bool]net.IP{}
	for _, ipc := range res.IPs {
		a := ipc.Address
		c.Addrs = append(c.Addrs, &a)
		if ipc.Gateway != nil && gw[ipc.Gateway.To4() != nil] == nil {
			gw[ipc.Gateway.To4() != nil] = ipc.Gateway
		}
	}
	for _, r := range res.Routes {
		lr := link.Route{Dst: r.Dst, GW: r.GW, Priority: r.Priority, Scope: r.Scope, MTU: r.MTU, AdvMSS: r.AdvMSS}
		if lr.GW == nil {
			lr.GW = gw[r.Dst.IP.To4() != nil]
		}
		if r.Table != nil {
			lr.Table = *r.Table
		}
		c.Routes = append(c.Routes, lr)
	}
	return c
}

func ones(n net.IPNet) int { o, _ := n.Mask.Size(); return o }

func defaultNet(v4 bool) net.IPNet {
	if v4 {
		return net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// firstHost is the subnet's network address plus one.
func firstHost(a net.IPNet) net.IP {
	ip := a.IP.Mask(a.Mask)
	if ip == nil {
		return nil
	}
	out := make(net.IP, len(ip))
	copy(out, ip)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]++
		if out[i] != 0 {
			break
		}
	}
	return out
}

// ipFamilies tells which IP families the IPAM result has (none without IPAM: a layer-2
// network may carry anything).
func ipFamilies(r *current.Result) (v4, v6 bool) {
	if r == nil {
		return false, false
	}
	for _, ipc := range r.IPs {
		is4 := ipc.Address.IP.To4() != nil
		v4, v6 = v4 || is4, v6 || !is4
	}
	return v4, v6
}
