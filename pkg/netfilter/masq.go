// Package netfilter is the suite's rule engine: one backend-neutral model of what a container
// needs from netfilter (bridge masquerade; portmap hostPort DNAT, hairpin and localhost SNAT),
// rendered to one iptables-restore --noflush transaction per IP family or to one nftables
// netlink batch, in the reference plugins' layout (chain names, hashes, comments).
//
// This file is the contract the bridge plugin codes against; the engine behind it is
// implemented by the netfilter work (issue 13 / 17).
package netfilter

import (
	"errors"
	"net/netip"
)

// Backends, as the reference's ipMasqBackend / backend keys name them.
const (
	BackendIPTables = "iptables"
	BackendNFTables = "nftables"
)

// Attachment identifies one container interface, as in cni.dev/valid-attachments.
type Attachment struct {
	ContainerID string `json:"containerID"`
	IfName      string `json:"ifname"`
}

// Masq is the bridge plugin's ipMasq for one container interface.
type Masq struct {
	Backend     string // BackendIPTables or BackendNFTables; "" picks as the reference does
	Network     string // network name (conf.Name)
	ContainerID string
	IfName      string
	// IPs are the container's addresses with their subnet's prefix length (10.1.2.3/24), as in
	// the CNI result; the masquerade chain accepts traffic to that subnet and masquerades the rest.
	// Empty on DEL means "unknown" (no prevResult, netns gone): the rules are found by comment.
	IPs []netip.Prefix
}

// ErrNotImplemented is returned until the engine lands.
var ErrNotImplemented = errors.New("netfilter engine not implemented yet")

// SetupMasq installs the masquerade rules of m (idempotent: what already exists is kept).
func SetupMasq(m Masq) error { return ErrNotImplemented }

// TeardownMasq removes m's rules; nothing to remove is success.
func TeardownMasq(m Masq) error { return ErrNotImplemented }

// CheckMasq reports, naming what is missing, whether m's rules are all in place.
func CheckMasq(m Masq) error { return ErrNotImplemented }

// GCMasq removes the masquerade rules of every container of network that is not in keep.
func GCMasq(backend, network string, keep []Attachment) error { return ErrNotImplemented }
