// Package portmap is the portmap plugin: hostPort mappings to a container, chained after the
// plugin that made its interface (it reads the container's addresses from prevResult), in the
// reference portmap v1.9.1's netfilter layout, through the shared engine in pkg/netfilter.
package portmap

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/cnierr"
	"github.com/cni-suite/cni-suite/pkg/netfilter"
)

// DefaultMarkBit is the packet mark bit that asks for masquerade (Kubernetes uses 14 and 15).
const DefaultMarkBit = 13

// Mapping is one entry of runtimeConfig.portMappings (capability "portMappings").
type Mapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
}

// Conf is the plugin's network config: every key of the reference portmap v1.9.1.
type Conf struct {
	types.NetConf
	Backend              *string   `json:"backend,omitempty"`
	SNAT                 *bool     `json:"snat,omitempty"`
	ConditionsV4         *[]string `json:"conditionsV4"`
	ConditionsV6         *[]string `json:"conditionsV6"`
	MasqAll              bool      `json:"masqAll,omitempty"`
	MarkMasqBit          *int      `json:"markMasqBit"`
	ExternalSetMarkChain *string   `json:"externalSetMarkChain"`
	RuntimeConfig        struct {
		PortMaps []Mapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig,omitempty"`
}

// Parsed is a validated config: the engine's model, the prevResult (nil when absent).
type Parsed struct {
	Conf  *Conf
	Prev  *current.Result
	Model netfilter.PortMap
}

// Parse decodes and validates the config on stdin for the container interface ifName.
// Malformed JSON is code 6; a bad value code 7 naming the key; an unsupported backend code 2.
func Parse(stdin []byte, containerID, ifName string) (*Parsed, error) {
	conf := &Conf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, cnierr.Decoding(fmt.Errorf("parse network config: %w", err))
	}
	p := &Parsed{Conf: conf}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(&conf.NetConf); err != nil {
			return nil, cnierr.Decoding(fmt.Errorf("parse prevResult: %w", err))
		}
		r, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, cnierr.Decoding(fmt.Errorf("convert prevResult: %w", err))
		}
		p.Prev = r
	}
	if strings.ContainsFunc(conf.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return nil, cnierr.InvalidConfig("name", "%q holds a control character", conf.Name)
	}
	m := netfilter.PortMap{
		Network: conf.Name, ContainerID: containerID, IfName: ifName,
		SNAT: conf.SNAT == nil || *conf.SNAT, MasqAll: conf.MasqAll, MarkMasqBit: DefaultMarkBit,
	}
	if conf.Backend != nil {
		m.Backend = *conf.Backend
		if err := netfilter.CheckBackend("backend", m.Backend); err != nil {
			return nil, err
		}
	}
	// Absent, the backend is the reference's choice (iptables unless only nftables is usable).
	m.Backend = netfilter.ResolveBackend(m.Backend)
	nft := m.Backend == netfilter.BackendNFTables
	if nft && conf.ExternalSetMarkChain != nil {
		return nil, cnierr.InvalidConfig("externalSetMarkChain", "is an iptables option, but the backend is nftables")
	}
	if conf.MarkMasqBit != nil && conf.ExternalSetMarkChain != nil {
		return nil, cnierr.InvalidConfig("markMasqBit", "cannot be combined with externalSetMarkChain")
	}
	if conf.MarkMasqBit != nil {
		if b := *conf.MarkMasqBit; b < 0 || b > 31 {
			return nil, cnierr.InvalidConfig("markMasqBit", "%d is not between 0 and 31", b)
		}
		m.MarkMasqBit = *conf.MarkMasqBit
	}
	if conf.ExternalSetMarkChain != nil {
		c := *conf.ExternalSetMarkChain
		if c == "" || len(c) > 28 || strings.ContainsAny(c, " \t\n\"'\\") {
			return nil, cnierr.InvalidConfig("externalSetMarkChain", "%q is not an iptables chain name", c)
		}
		m.ExternalSetMarkChain = c
	}
	for key, cond := range map[string]*[]string{"conditionsV4": conf.ConditionsV4, "conditionsV6": conf.ConditionsV6} {
		if cond == nil || len(*cond) == 0 || (*cond)[0] == "" {
			continue
		}
		// The reference tells the backend of conditions by their first character: iptables
		// match arguments start with '-' or '!'.
		if c := (*cond)[0][0]; (c != '-' && c != '!') != nft {
			syntax, backend := "nftables", "iptables"
			if nft {
				syntax, backend = "iptables", "nftables"
			}
			return nil, cnierr.InvalidConfig(key, "%q is %s syntax, but the backend is %s", (*cond)[0], syntax, backend)
		}
		for _, a := range *cond {
			if strings.ContainsAny(a, "\n\r") {
				return nil, cnierr.InvalidConfig(key, "argument %q holds a line break", a)
			}
		}
		if nft {
			f := netfilter.IPv4
			if key == "conditionsV6" {
				f = netfilter.IPv6
			}
			if err := netfilter.CheckNFTConditions(f, *cond); err != nil {
				return nil, cnierr.Unsupported(key, strings.Join(*cond, " "), err.Error())
			}
		}
		if key == "conditionsV4" {
			m.ConditionsV4 = *cond
		} else {
			m.ConditionsV6 = *cond
		}
	}
	for i, pm := range conf.RuntimeConfig.PortMaps {
		key := fmt.Sprintf("runtimeConfig.portMappings[%d]", i)
		if pm.ContainerPort <= 0 || pm.ContainerPort > 65535 {
			return nil, cnierr.InvalidConfig(key+".containerPort", "%d is not a port number", pm.ContainerPort)
		}
		if pm.HostPort <= 0 || pm.HostPort > 65535 {
			return nil, cnierr.InvalidConfig(key+".hostPort", "%d is not a port number", pm.HostPort)
		}
		switch strings.ToLower(pm.Protocol) {
		case "tcp", "udp", "sctp":
		default:
			return nil, cnierr.InvalidConfig(key+".protocol", "%q is not tcp, udp or sctp", pm.Protocol)
		}
		e := netfilter.PortMapping{HostPort: pm.HostPort, ContainerPort: pm.ContainerPort, Protocol: pm.Protocol}
		if pm.HostIP != "" {
			a, err := netip.ParseAddr(pm.HostIP)
			if err != nil || a.Zone() != "" {
				return nil, cnierr.InvalidConfig(key+".hostIP", "%q is not an IP address", pm.HostIP)
			}
			e.HostIP = a.Unmap()
		}
		m.Mappings = append(m.Mappings, e)
	}
	if p.Prev != nil {
		m.IPs = containerIPs(p.Prev, ifName)
	}
	p.Model = m
	return p, nil
}

// containerIPs picks, as the reference does, the first IPv4 and the first IPv6 address of the
// result, skipping those of interfaces known not to be the container's ifName.
func containerIPs(r *current.Result, ifName string) []netip.Prefix {
	var v4, v6 netip.Prefix
	for _, ip := range r.IPs {
		if ip.Interface != nil {
			i := *ip.Interface
			if i >= 0 && i < len(r.Interfaces) && (r.Interfaces[i].Name != ifName || r.Interfaces[i].Sandbox == "") {
				continue
			}
		}
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		a = a.Unmap()
		ones, _ := ip.Address.Mask.Size()
		pfx := netip.PrefixFrom(a, ones)
		if a.Is4() && !v4.IsValid() {
			v4 = pfx
		} else if a.Is6() && !v6.IsValid() {
			v6 = pfx
		}
	}
	var out []netip.Prefix
	for _, p := range []netip.Prefix{v4, v6} {
		if p.IsValid() {
			out = append(out, p)
		}
	}
	return out
}
