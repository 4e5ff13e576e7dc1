// Package bridge is the bridge plugin: a veth pair per container, its host end on a Linux
// bridge, addresses from the delegated IPAM plugin, optional gateway, masquerade and MAC spoof
// check, with the reference bridge plugin's config keys and results.
//
// Where it deliberately differs from the reference v1.9.1:
//   - Bad config is a CNI error naming the key (7; 4 for CNI_ARGS; 2 for an unsupported
//     ipMasqBackend), before any change. Checks only ADD needs do not block DEL.
//   - A failed ADD undoes everything it made: veth, spoof check, IPAM reservation, masquerade
//     rules (also when the result cannot be given in the config's cniVersion).
//   - DEL runs every step even when one fails; with the netns gone (or its file unmounted) and
//     no prevResult it still removes the masquerade rules (found by comment) and the spoof check.
//   - No sleeps: no bridge-port state polling; IPv6 DAD is waited for, on address events, only
//     with enabledad (otherwise addresses are added without DAD). Unsolicited neighbour
//     advertisements (ndisc_notify) join the gratuitous ARP (arp_notify).
//   - A bridge made here has a fixed MAC, and host veths get fe:… MACs, so the bridge MAC
//     never follows a port; the IPv6 gateway address on the bridge skips DAD.
//   - Several IPv4 ranges give the bridge several gateway addresses (the reference refuses).
//   - An IPv4-only network (IPAM gave no IPv6 address) makes its host veths, and the bridge
//     when it creates it, with IPv6 disabled before they come up, and the pod's interface
//     sends no router solicitation (router_solicitations=0; it keeps its link-local address and
//     still takes unsolicited advertisements): otherwise every new port's link-local DAD,
//     MLD and solicitations are flooded to every other port, so ADD cost grows with the pods.
//     A network with IPv6 gateways turns IPv6 back on for a shared bridge.
//   - GC collects IPAM and masquerade rules (the reference has no GC); CHECK also checks that
//     the bridge is up and the masquerade rules are in place.
package bridge

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/cnierr"
	"github.com/cni-suite/cni-suite/pkg/netfilter"
)

const defaultBridge = "cni0"

// NetConf is the bridge plugin's network configuration: every key of the reference bridge.
type NetConf struct {
	types.NetConf
	BrName                    string       `json:"bridge"`
	IsGW                      bool         `json:"isGateway"`
	IsDefaultGW               bool         `json:"isDefaultGateway"`
	ForceAddress              bool         `json:"forceAddress"`
	IPMasq                    bool         `json:"ipMasq"`
	IPMasqBackend             *string      `json:"ipMasqBackend,omitempty"`
	MTU                       int          `json:"mtu"`
	HairpinMode               bool         `json:"hairpinMode"`
	PromiscMode               bool         `json:"promiscMode"`
	Vlan                      int          `json:"vlan"`
	VlanTrunk                 []*VlanTrunk `json:"vlanTrunk,omitempty"`
	PreserveDefaultVlan       bool         `json:"preserveDefaultVlan"`
	MacSpoofChk               bool         `json:"macspoofchk,omitempty"`
	EnableDad                 bool         `json:"enabledad,omitempty"`
	DisableContainerInterface bool         `json:"disableContainerInterface,omitempty"`
	PortIsolation             bool         `json:"portIsolation,omitempty"`

	Args struct {
		Cni struct {
			Mac string `json:"mac,omitempty"`
		} `json:"cni,omitempty"`
	} `json:"args,omitempty"`
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig,omitempty"`

	// Derived by Parse.
	MAC    net.HardwareAddr `json:"-"` // container MAC from CNI_ARGS, args or runtimeConfig
	Vlans  []int            `json:"-"` // trunk VLANs, sorted, unique
	envMAC string
}

// VlanTrunk is one vlanTrunk entry: a single id or a minID..maxID range.
type VlanTrunk struct {
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
	ID    *int `json:"id,omitempty"`
}

// envArgs is what the plugin reads from CNI_ARGS.
type envArgs struct {
	types.CommonArgs
	MAC types.UnmarshallableString `json:"mac,omitempty"`
}

// Parse decodes the config and CNI_ARGS and checks what every verb needs, as the reference
// does for every verb: code 6 for undecodable JSON, code 7 naming the key for an invalid VLAN
// setting, code 4 for bad CNI_ARGS. ADD checks the rest with validateAdd.
func Parse(stdin []byte, cniArgs string) (*NetConf, error) {
	n := &NetConf{BrName: defaultBridge}
	if err := json.Unmarshal(stdin, n); err != nil {
		return nil, cnierr.Decoding(fmt.Errorf("parse bridge network config: %w", err))
	}
	if n.Vlan < 0 || n.Vlan > 4094 {
		return nil, cnierr.InvalidConfig("vlan", "%d must be between 0 and 4094", n.Vlan)
	}
	vlans, err := collectTrunk(n.VlanTrunk)
	if err != nil {
		return nil, err
	}
	n.Vlans = vlans
	if cniArgs != "" {
		e := envArgs{}
		if err := types.LoadArgs(cniArgs, &e); err != nil {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("invalid CNI_ARGS: %v", err), "")
		}
		n.envMAC = string(e.MAC)
	}
	if n.IsDefaultGW {
		n.IsGW = true
	}
	return n, nil
}

// parsePrevResult decodes prevResult (CHECK needs it; DEL uses it when it decodes).
func (n *NetConf) parsePrevResult() error {
	if n.RawPrevResult == nil {
		return nil
	}
	if err := version.ParsePrevResult(&n.NetConf); err != nil {
		return cnierr.Decoding(fmt.Errorf("parse prevResult: %w", err))
	}
	return nil
}

// validateAdd checks what only ADD uses (DEL must clean up whatever the config says), and
// resolves the container MAC.
func (n *NetConf) validateAdd() error {
	if err := validIfName(n.BrName); err != nil {
		return cnierr.InvalidConfig("bridge", "%q: %v", n.BrName, err)
	}
	if n.HairpinMode && n.PromiscMode {
		return cnierr.InvalidConfig("hairpinMode", "cannot be set together with promiscMode")
	}
	if n.IPAM.Type != "" && n.DisableContainerInterface {
		return cnierr.InvalidConfig("disableContainerInterface", "cannot be set with an ipam plugin (ipam.type %q)", n.IPAM.Type)
	}
	if n.IPMasq {
		if err := netfilter.CheckBackend("ipMasqBackend", n.masqBackend()); err != nil {
			return err
		}
	}
	for _, m := range []struct{ key, val string }{
		{"CNI_ARGS MAC", n.envMAC}, {"args.cni.mac", n.Args.Cni.Mac}, {"runtimeConfig.mac", n.RuntimeConfig.Mac},
	} {
		if err := n.setMAC(m.key, m.val); err != nil {
			return err
		}
	}
	return nil
}

// validIfName is the kernel's rule for interface names.
func validIfName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty name")
	case len(s) > 15:
		return fmt.Errorf("longer than 15 characters")
	case s == "." || s == "..":
		return fmt.Errorf("not a valid name")
	case strings.ContainsAny(s, "/: \t\n\v\f\r"):
		return fmt.Errorf("contains '/', ':' or whitespace")
	}
	return nil
}

// setMAC validates a container MAC given under key; later calls override earlier ones, so the
// precedence is CNI_ARGS < args.cni.mac < runtimeConfig.mac, as the reference has it.
func (n *NetConf) setMAC(key, s string) error {
	if s == "" {
		return nil
	}
	m, err := net.ParseMAC(s)
	if err != nil {
		return cnierr.InvalidConfig(key, "%q is not a MAC address", s)
	}
	if len(m) != 6 || m[0]&1 != 0 || (m[0]|m[1]|m[2]|m[3]|m[4]|m[5]) == 0 {
		return cnierr.InvalidConfig(key, "%q is not a unicast Ethernet MAC address", s)
	}
	n.MAC = m
	return nil
}

// collectTrunk expands vlanTrunk into sorted unique VLAN IDs.
func collectTrunk(trunk []*VlanTrunk) ([]int, error) {
	seen := map[int]bool{}
	valid := func(what string, v int) error {
		if v <= 0 || v > 4094 {
			return cnierr.InvalidConfig("vlanTrunk", "%s %d must be between 1 and 4094", what, v)
		}
		return nil
	}
	for _, t := range trunk {
		if t == nil {
			continue
		}
		switch {
		case t.MinID != nil && t.MaxID != nil:
			if err := valid("minID", *t.MinID); err != nil {
				return nil, err
			}
			if err := valid("maxID", *t.MaxID); err != nil {
				return nil, err
			}
			if *t.MaxID < *t.MinID {
				return nil, cnierr.InvalidConfig("vlanTrunk", "minID %d is greater than maxID %d", *t.MinID, *t.MaxID)
			}
			for v := *t.MinID; v <= *t.MaxID; v++ {
				seen[v] = true
			}
		case t.MinID == nil && t.MaxID != nil:
			return nil, cnierr.InvalidConfig("vlanTrunk", "maxID without minID (both must be set)")
		case t.MinID != nil && t.MaxID == nil:
			return nil, cnierr.InvalidConfig("vlanTrunk", "minID without maxID (both must be set)")
		}
		if t.ID != nil {
			if err := valid("id", *t.ID); err != nil {
				return nil, err
			}
			seen[*t.ID] = true
		}
	}
	if len(seen) == 0 {
		return nil, nil
	}
	out := make([]int, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Ints(out)
	return out, nil
}

// vlanFiltering: the bridge filters VLANs when a VLAN or a trunk is configured.
func (n *NetConf) vlanFiltering() bool { return n.Vlan != 0 || n.VlanTrunk != nil }

// masqBackend is ipMasqBackend, "" when unset (the engine picks as the reference does).
func (n *NetConf) masqBackend() string {
	if n.IPMasqBackend == nil {
		return ""
	}
	return *n.IPMasqBackend
}

// spoofID names an attachment in the spoof-check chains, as the reference does.
func spoofID(containerID, ifName string) string { return containerID + "-" + ifName }
