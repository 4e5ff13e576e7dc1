// Package netfilter is the suite's rule engine: one backend-neutral model of what a container
// needs from netfilter (bridge masquerade; portmap hostPort DNAT, hairpin and localhost SNAT),
// rendered either to one iptables-restore --noflush transaction per IP family or to one
// nftables netlink batch (no program run), in the reference plugins' layout for each backend
// (chain names, hashes, comments).
//
// The model types (Masq, PortMap) say what a container needs, not how a backend writes it;
// each backend renders them. Teardown and GC clean both backends.
//
// Every call works in the network namespace of the calling thread (the node's).
package netfilter

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cni-suite/cni-suite/pkg/cnierr"
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

// CheckBackend validates a backend value of the config key (ipMasqBackend, backend): "",
// "iptables" and "nftables" are fine; anything else is CNI error code 2 naming both.
func CheckBackend(key, value string) error {
	switch value {
	case "", BackendIPTables, BackendNFTables:
		return nil
	default:
		return cnierr.Unsupported(key, value, `unknown backend (want "iptables" or "nftables")`)
	}
}

// checkName refuses a network name that the iptables-restore text cannot carry (a line
// break or other control character would end the rule early).
func checkName(network string) error {
	for _, c := range network {
		if c < 0x20 || c == 0x7f {
			return cnierr.InvalidConfig("name", "%q holds a control character", network)
		}
	}
	return nil
}

// byFamily splits prefixes by IP family, keeping their order.
func byFamily(ps []netip.Prefix) map[Family][]netip.Prefix {
	out := map[Family][]netip.Prefix{}
	for _, p := range ps {
		f := familyOf(p.Addr())
		out[f] = append(out[f], p)
	}
	return out
}

// families lists the families to act on: those of the IPs, or, when none are known, every
// family this node can use (a node without IPv6 or without ip6tables holds no IPv6 rules, and
// its DEL must not fail on them, as the reference's does not).
func families(ps []netip.Prefix) []Family {
	fs := byFamily(ps)
	if len(fs) == 0 {
		return usableFamilies()
	}
	var out []Family
	for _, f := range []Family{IPv4, IPv6} {
		if len(fs[f]) > 0 {
			out = append(out, f)
		}
	}
	return out
}

// SetupMasq installs the masquerade rules of m (idempotent: what already exists is kept).
// A failure leaves no rule of m behind.
func SetupMasq(m Masq) error {
	if err := CheckBackend("ipMasqBackend", m.Backend); err != nil {
		return err
	}
	if err := checkName(m.Network); err != nil {
		return err
	}
	if len(m.IPs) == 0 {
		return nil
	}
	if ResolveBackend(m.Backend) == BackendNFTables {
		if err := setupMasqNFT(m); err != nil {
			return fmt.Errorf("set up masquerade for %s: %w", m.ContainerID, err)
		}
		return nil
	}
	fs := byFamily(m.IPs)
	var done []Family
	for _, f := range families(m.IPs) {
		if err := setupMasqIPT(ipt{f}, m, fs[f]); err != nil {
			for _, d := range done {
				_ = teardownMasqIPT(ipt{d}, m, fs[d])
			}
			return fmt.Errorf("set up masquerade for %s (%s): %w", m.ContainerID, f, err)
		}
		done = append(done, f)
	}
	return nil
}

// TeardownMasq removes m's rules; nothing to remove is success. Whatever the configured
// backend, it cleans every backend this engine knows.
func TeardownMasq(m Masq) error {
	if err := checkName(m.Network); err != nil {
		return nil // no rule can exist for it
	}
	fs := byFamily(m.IPs)
	var errs []error
	for _, f := range families(m.IPs) {
		if !iptablesInstalled(f) || iptablesChainGone(f, MasqChain(m.Network, m.ContainerID)) {
			continue // no program to have made rules with, or no rule (one netlink lookup)
		}
		if err := teardownMasqIPT(ipt{f}, m, fs[f]); err != nil {
			errs = append(errs, fmt.Errorf("tear down masquerade for %s (%s): %w", m.ContainerID, f, err))
		}
	}
	if err := teardownMasqNFT(m); err != nil {
		errs = append(errs, fmt.Errorf("tear down masquerade for %s (nftables): %w", m.ContainerID, err))
	}
	return errors.Join(errs...)
}

// CheckMasq reports, naming what is missing, whether m's rules are all in place.
func CheckMasq(m Masq) error {
	if err := CheckBackend("ipMasqBackend", m.Backend); err != nil {
		return err
	}
	if err := checkName(m.Network); err != nil {
		return err
	}
	if ResolveBackend(m.Backend) == BackendNFTables {
		return checkMasqNFT(m)
	}
	fs := byFamily(m.IPs)
	for _, f := range families(m.IPs) {
		if err := checkMasqIPT(ipt{f}, m, fs[f]); err != nil {
			return err
		}
	}
	return nil
}

// GCMasq removes the masquerade rules of every container of network that is not in keep.
// It keeps going on errors and returns them all.
func GCMasq(backend, network string, keep []Attachment) error {
	return gcBoth(network, keep, "masquerade rules", isMasqChain, gcMasqIPT,
		func(map[string]bool) error { return gcMasqNFT(network, keep) })
}

// gcBoth is the GC of one kind of rule in both backends (a node may hold either, or both after
// a backend change): per iptables family that may hold such chains, then nftables. It keeps
// going on errors and returns them all.
func gcBoth(network string, keep []Attachment, what string, isChain func(string) bool,
	gcIPT func(ipt, string, map[string]bool) error, gcNFT func(map[string]bool) error) error {
	if err := checkName(network); err != nil {
		return nil
	}
	ids := map[string]bool{}
	for _, a := range keep {
		ids[a.ContainerID] = true
	}
	var errs []error
	for _, f := range usableFamilies() {
		if !iptablesMayHold(f, isChain) {
			continue
		}
		if err := gcIPT(ipt{f}, network, ids); err != nil {
			errs = append(errs, fmt.Errorf("garbage-collect %s (%s): %w", what, f, err))
		}
	}
	if err := gcNFT(ids); err != nil {
		errs = append(errs, fmt.Errorf("garbage-collect %s (nftables): %w", what, err))
	}
	return errors.Join(errs...)
}
