package harness

import (
	"encoding/json"
	"fmt"
)

// Backends of the bridge's ipMasqBackend and portmap's backend keys.
const (
	IPTables = "iptables"
	NFTables = "nftables"
)

// Net describes the network a node runs: one bridge with host-local IPAM, ipMasq, and
// portmap chained after it (the shape of containerd's and kubenet's default network).
type Net struct {
	Name    string // network name; default "cnis-bench"
	Bridge  string // bridge device; default "cnisbr0"
	Subnet  string // host-local subnet; default 10.88.0.0/16
	DataDir string // host-local dataDir (required: a throwaway directory)
	// Backend selects ipMasqBackend (bridge) and backend (portmap); "" leaves both keys out,
	// so each plugin picks its default (iptables on these machines), as most nodes run.
	Backend string
}

func (n Net) withDefaults() Net {
	if n.Name == "" {
		n.Name = "cnis-bench"
	}
	if n.Bridge == "" {
		n.Bridge = "cnisbr0"
	}
	if n.Subnet == "" {
		n.Subnet = "10.88.0.0/16"
	}
	return n
}

// Conflist renders the network as a .conflist, with the cniVersion lines DESIGN.md asks
// for (libcni picks 1.1.0 from cniVersions, so GC and STATUS are available).
func (n Net) Conflist() []byte {
	n = n.withDefaults()
	if n.DataDir == "" {
		panic("harness.Net: DataDir is required (never the node's /var/lib/cni)")
	}
	bridge := map[string]any{
		"type":        "bridge",
		"bridge":      n.Bridge,
		"isGateway":   true,
		"ipMasq":      true,
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"ranges":  [][]map[string]string{{{"subnet": n.Subnet}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
			"dataDir": n.DataDir,
		},
	}
	portmap := map[string]any{
		"type":         "portmap",
		"capabilities": map[string]bool{"portMappings": true},
		"snat":         true,
	}
	if n.Backend != "" {
		bridge["ipMasqBackend"] = n.Backend
		portmap["backend"] = n.Backend
	}
	b, err := json.Marshal(map[string]any{
		"cniVersion":  "1.0.0",
		"cniVersions": []string{"1.0.0", "1.1.0"},
		"name":        n.Name,
		"plugins":     []any{bridge, portmap},
	})
	if err != nil {
		panic(err)
	}
	return b
}

// NetName is the network's name after defaults.
func (n Net) NetName() string { return n.withDefaults().Name }

// PortMapping is one entry of the portMappings capability.
type PortMapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// PodPorts gives pod i two mappings, tcp and udp, on host port 20000+i.
func PodPorts(i int) []PortMapping {
	return []PortMapping{
		{HostPort: 20000 + i, ContainerPort: 80, Protocol: "tcp"},
		{HostPort: 20000 + i, ContainerPort: 53, Protocol: "udp"},
	}
}

// Pod is one sandbox: a container ID (new for every sandbox) in a pod netns.
type Pod struct {
	Index int
	ID    string
	NetNS string // path
	Ports []PortMapping
}

// NewPod names a new sandbox for pod i in the netns at path.
func NewPod(i int, netnsPath string) Pod {
	return Pod{Index: i, ID: fmt.Sprintf("cnis%04d%s", i, RandHex(12)), NetNS: netnsPath, Ports: PodPorts(i)}
}
