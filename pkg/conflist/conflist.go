// Package conflist renders the network config list the suite installs on a node (DESIGN.md:
// "Conflists we render"), from the node's pod CIDRs. It has no dependencies beyond the standard
// library, so its fuzz target builds quickly.
package conflist

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
)

// Defaults of the rendered network.
const (
	DefaultNetworkName = "cni-suite"
	DefaultBridge      = "cni0"
	// DefaultDataDir keeps host-local's reservations on tmpfs: a reboot, which kills every pod,
	// also forgets every reservation, so nothing leaks across boots.
	DefaultDataDir = "/run/cni-suite/networks"
	// ConfMode: the runtime reads the conflist as root; nobody else needs to.
	ConfMode fs.FileMode = 0o600
)

// The conflist's versions (DESIGN.md): containerd 1.6 fails every ADD on a "1.1.0" conflist, so
// "cniVersion" says 1.0.0 and "cniVersions" lets newer runtimes pick 1.1.0 (and with it GC, STATUS).
var (
	ConfCNIVersion  = "1.0.0"
	ConfCNIVersions = []string{"1.0.0", "1.1.0"}
)

var netNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// ValidNetworkName checks a network name as libcni does (it also names our conflist file).
func ValidNetworkName(name string) error {
	if !netNameRE.MatchString(name) {
		return fmt.Errorf("network name %q: want letters, digits, '_', '.' or '-', starting with a letter or digit", name)
	}
	return nil
}

// ConfPluginTypes are the binaries the rendered config runs.
var ConfPluginTypes = []string{"bridge", "host-local", "portmap"}

// ConfFileName is our conflist's name in the conf dir: runtimes take the first file by name.
func ConfFileName(network string) string { return "10-" + network + ".conflist" }

// NetParams is what varies in the rendered config.
type NetParams struct {
	Name     string         // network name; DefaultNetworkName when empty
	Bridge   string         // bridge device; DefaultBridge when empty
	PodCIDRs []netip.Prefix // this node's pod CIDRs: at most one per IP family
	MTU      int            // 0 leaves it out (the bridge plugin then uses its default)
	DataDir  string         // host-local dataDir; DefaultDataDir when empty
}

type conflist struct {
	CNIVersion  string   `json:"cniVersion"`
	CNIVersions []string `json:"cniVersions"`
	Name        string   `json:"name"`
	Plugins     []any    `json:"plugins"`
}

type bridgeConf struct {
	Type        string   `json:"type"`
	Bridge      string   `json:"bridge"`
	IsGateway   bool     `json:"isGateway"`
	IPMasq      bool     `json:"ipMasq"`
	HairpinMode bool     `json:"hairpinMode"`
	MTU         int      `json:"mtu,omitempty"`
	IPAM        ipamConf `json:"ipam"`
}

type ipamConf struct {
	Type    string        `json:"type"`
	Ranges  [][]rangeConf `json:"ranges"`
	Routes  []routeConf   `json:"routes"`
	DataDir string        `json:"dataDir"`
}

type rangeConf struct {
	Subnet string `json:"subnet"`
}

type routeConf struct {
	Dst string `json:"dst"`
}

type portmapConf struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
	SNAT         bool            `json:"snat"`
}

// ParsePodCIDRs parses pod CIDRs as given on the command line or in a Node's spec.podCIDRs
// (comma-separated lists are split), and checks them: canonical prefixes, at most one per IP
// family (as Kubernetes allocates them), big enough for a gateway and a pod.
func ParsePodCIDRs(in []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var have4, have6 bool
	for _, item := range in {
		for _, s := range strings.Split(item, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return nil, fmt.Errorf("pod CIDR %q: %w", s, err)
			}
			if p.Addr().Is4In6() {
				return nil, fmt.Errorf("pod CIDR %q: IPv4-mapped IPv6 prefixes are not supported", s)
			}
			if p != p.Masked() {
				return nil, fmt.Errorf("pod CIDR %q has host bits set (did you mean %s?)", s, p.Masked())
			}
			if p.Addr().Is4() {
				if have4 {
					return nil, fmt.Errorf("pod CIDR %q: more than one IPv4 pod CIDR (at most one per family)", s)
				}
				if p.Bits() > 30 {
					return nil, fmt.Errorf("pod CIDR %q is too small: want /30 or larger", s)
				}
				have4 = true
			} else {
				if have6 {
					return nil, fmt.Errorf("pod CIDR %q: more than one IPv6 pod CIDR (at most one per family)", s)
				}
				if p.Bits() > 126 {
					return nil, fmt.Errorf("pod CIDR %q is too small: want /126 or larger", s)
				}
				have6 = true
			}
			out = append(out, p)
		}
	}
	return out, nil
}

// ErrNoPodCIDR is returned by Render when the node has no pod CIDR yet.
var ErrNoPodCIDR = errors.New("no pod CIDR")

// Render builds the network config list: a bridge (gateway, masquerade, hairpin for Kubernetes
// services that lead back to the same pod) with host-local IPAM, one range set per pod CIDR and a
// default route per family, then portmap for hostPorts. The output is encoding/json's, indented,
// with a final newline: the same input always gives the same bytes.
func Render(p NetParams) ([]byte, error) {
	if len(p.PodCIDRs) == 0 {
		return nil, ErrNoPodCIDR
	}
	name, bridge, dataDir := p.Name, p.Bridge, p.DataDir
	if name == "" {
		name = DefaultNetworkName
	}
	if bridge == "" {
		bridge = DefaultBridge
	}
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	if err := ValidNetworkName(name); err != nil {
		return nil, err
	}
	if len(bridge) > 15 || strings.ContainsAny(bridge, "/: \t\n") {
		return nil, fmt.Errorf("bridge name %q: not a valid interface name", bridge)
	}
	if !filepath.IsAbs(dataDir) {
		return nil, fmt.Errorf("data dir %q: want an absolute path", dataDir)
	}
	if p.MTU < 0 || (p.MTU > 0 && p.MTU < 576) || p.MTU > 65535 {
		return nil, fmt.Errorf("mtu %d: want 0 (default) or 576..65535", p.MTU)
	}
	strs := make([]string, len(p.PodCIDRs))
	for i, c := range p.PodCIDRs {
		strs[i] = c.String()
	}
	if _, err := ParsePodCIDRs(strs); err != nil {
		return nil, err
	}
	ipam := ipamConf{Type: "host-local", DataDir: dataDir}
	var has4, has6 bool
	for _, c := range p.PodCIDRs {
		ipam.Ranges = append(ipam.Ranges, []rangeConf{{Subnet: c.String()}})
		has4 = has4 || c.Addr().Is4()
		has6 = has6 || !c.Addr().Is4()
	}
	if has4 {
		ipam.Routes = append(ipam.Routes, routeConf{Dst: "0.0.0.0/0"})
	}
	if has6 {
		ipam.Routes = append(ipam.Routes, routeConf{Dst: "::/0"})
	}
	cl := conflist{
		CNIVersion:  ConfCNIVersion,
		CNIVersions: ConfCNIVersions,
		Name:        name,
		Plugins: []any{
			bridgeConf{Type: "bridge", Bridge: bridge, IsGateway: true, IPMasq: true, HairpinMode: true, MTU: p.MTU, IPAM: ipam},
			portmapConf{Type: "portmap", Capabilities: map[string]bool{"portMappings": true}, SNAT: true},
		},
	}
	b, err := json.MarshalIndent(cl, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
