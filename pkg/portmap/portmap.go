package portmap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/cnierr"
	"github.com/cni-suite/cni-suite/pkg/netfilter"
)

// Funcs are the plugin's verbs, for skel.PluginMainFuncs.
var Funcs = skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}

func udpPorts(m netfilter.PortMap) []int {
	var out []int
	for _, pm := range m.Mappings {
		if strings.EqualFold(pm.Protocol, "udp") {
			out = append(out, pm.HostPort)
		}
	}
	return out
}

// flushUDP removes stale UDP conntrack entries of the mapped ports in each family; failures
// are reported on stderr only, as the reference does.
func flushUDP(m netfilter.PortMap, fams []netfilter.Family) {
	ports := udpPorts(m)
	if len(ports) == 0 {
		return
	}
	for _, f := range fams {
		if err := netfilter.DeleteUDPConntrack(f, ports); err != nil {
			fmt.Fprintf(os.Stderr, "portmap: %v\n", err)
		}
	}
}

func familiesOf(m netfilter.PortMap) []netfilter.Family {
	if len(m.IPs) == 0 {
		if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
			return []netfilter.Family{netfilter.IPv4}
		}
		return []netfilter.Family{netfilter.IPv4, netfilter.IPv6}
	}
	var out []netfilter.Family
	for _, ip := range m.IPs {
		if ip.Addr().Is4() {
			out = append(out, netfilter.IPv4)
		} else {
			out = append(out, netfilter.IPv6)
		}
	}
	return out
}

// Add maps the host ports to the container's addresses from prevResult and prints prevResult.
func Add(args *skel.CmdArgs) error {
	p, err := Parse(args.StdinData, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	if p.Prev == nil {
		return cnierr.InvalidConfig("prevResult", "missing: portmap must be called as a chained plugin")
	}
	m := p.Model
	if len(m.Mappings) > 0 && len(m.IPs) > 0 {
		if m.SNAT {
			for _, ip := range m.IPs {
				if ip.Addr().Is4() {
					if err := enableRouteLocalnet(ip.Addr()); err != nil {
						return cnierr.Internal(err)
					}
				}
			}
		}
		if err := netfilter.SetupPortMap(m); err != nil {
			return cnierr.Internal(err)
		}
		flushUDP(m, familiesOf(m))
	}
	return types.PrintResult(p.Conf.PrevResult, p.Conf.CNIVersion)
}

// Del removes the container's mappings. It needs neither prevResult nor the netns: the
// mappings come from runtimeConfig, and without prevResult both families are cleaned.
func Del(args *skel.CmdArgs) error {
	p, err := Parse(args.StdinData, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	m := p.Model
	if len(m.Mappings) == 0 {
		return nil
	}
	if err := netfilter.TeardownPortMap(m); err != nil {
		return cnierr.Internal(err)
	}
	flushUDP(m, familiesOf(m))
	return nil
}

// Check verifies that every rule of the container's mappings is in place.
func Check(args *skel.CmdArgs) error {
	p, err := Parse(args.StdinData, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	if p.Prev == nil {
		return cnierr.InvalidConfig("prevResult", "missing: CHECK needs the result of ADD")
	}
	if err := netfilter.CheckPortMap(p.Model); err != nil {
		return cnierr.Internal(err)
	}
	return nil
}

// GC removes the mappings of every container of this network not in cni.dev/valid-attachments.
func GC(args *skel.CmdArgs) error {
	p, err := Parse(args.StdinData, args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	var keep []netfilter.Attachment
	for _, a := range p.Conf.ValidAttachments {
		keep = append(keep, netfilter.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	if err := netfilter.GCPortMap(p.Model.Backend, p.Conf.Name, keep); err != nil {
		return cnierr.Internal(err)
	}
	return nil
}

// Status fails with code 50 when the plugin cannot serve ADD: a config it refuses, or, with
// the iptables backend, the iptables programs it runs missing.
func Status(args *skel.CmdArgs) error {
	p, err := Parse(args.StdinData, args.ContainerID, args.IfName)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return types.NewError(cnierr.ErrPluginNotAvailable, "portmap cannot serve ADD: "+te.Msg, te.Details)
		}
		return types.NewError(cnierr.ErrPluginNotAvailable, "portmap cannot serve ADD: "+err.Error(), "")
	}
	if p.Model.Backend == netfilter.BackendNFTables {
		return nil // programmed over netlink: no program needed
	}
	for _, prog := range []string{"iptables-save", "iptables-restore", "ip6tables-save", "ip6tables-restore"} {
		if _, err := exec.LookPath(prog); err != nil {
			return types.NewError(cnierr.ErrPluginNotAvailable, fmt.Sprintf("portmap cannot work: %s not found", prog), err.Error())
		}
	}
	return nil
}
