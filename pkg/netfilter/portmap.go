package netfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// PortMapping is one hostPort mapping (CONVENTIONS.md portMappings), already validated.
type PortMapping struct {
	HostPort      int
	ContainerPort int
	// Protocol as configured: tcp, udp or sctp in any case. The reference groups entry rules
	// by the string as given, so it is kept as given; rules use it lowercased.
	Protocol string
	// HostIP limits the mapping to one local address; "" or an unspecified address (0.0.0.0,
	// ::) maps every local address of the family.
	HostIP netip.Addr
}

// PortMap is what the portmap plugin needs for one container: its hostPort mappings to the
// container's addresses, and masquerade of hairpin and localhost traffic to them.
type PortMap struct {
	Backend     string // BackendIPTables or BackendNFTables; "" picks as the reference does
	Network     string
	ContainerID string
	IfName      string
	// IPs are the container addresses to map to, at most one per family, with their subnet's
	// prefix length (hairpin traffic is matched by that subnet). Empty on DEL: both families.
	IPs      []netip.Prefix
	Mappings []PortMapping
	// SNAT marks hairpin and localhost traffic for masquerade (the reference's snat, default true).
	SNAT bool
	// MasqAll masquerades traffic to the mapped ports from every source, not only hairpin.
	MasqAll bool
	// MarkMasqBit is the bit of the packet mark that asks for masquerade (default 13).
	MarkMasqBit int
	// ExternalSetMarkChain, when set, is jumped to instead of CNI-HOSTPORT-SETMARK (and that
	// chain and CNI-HOSTPORT-MASQ are not made).
	ExternalSetMarkChain string
	// ConditionsV4/V6 are extra match arguments for the entry rules, in the backend's syntax.
	ConditionsV4, ConditionsV6 []string
}

func (p PortMap) backendKey() string { return "backend" }

// SetupPortMap installs p's rules for each of its addresses' families, atomically per family;
// when a family fails, the families already done are removed again.
func SetupPortMap(p PortMap) error {
	if err := CheckBackend(p.backendKey(), p.Backend); err != nil {
		return err
	}
	if err := checkName(p.Network); err != nil {
		return err
	}
	if len(p.Mappings) == 0 || len(p.IPs) == 0 {
		return nil
	}
	if ResolveBackend(p.Backend) == BackendNFTables {
		if err := setupPortMapNFT(p); err != nil {
			return fmt.Errorf("set up port mappings for %s: %w", p.ContainerID, err)
		}
		return nil
	}
	var done []Family
	for _, ip := range p.IPs {
		f := familyOf(ip.Addr())
		if err := setupPortMapIPT(ipt{f}, p, ip); err != nil {
			for _, d := range done {
				_ = teardownPortMapIPT(ipt{d}, p)
			}
			return fmt.Errorf("set up port mappings for %s (%s): %w", p.ContainerID, f, err)
		}
		done = append(done, f)
	}
	return nil
}

// TeardownPortMap removes p's rules (for its addresses' families, or both when none are
// known); nothing to remove is success. Shared chains stay.
func TeardownPortMap(p PortMap) error {
	if err := checkName(p.Network); err != nil {
		return nil // no rule can exist for it
	}
	var errs []error
	for _, f := range families(p.IPs) {
		if !iptablesInstalled(f) || iptablesChainGone(f, DNATChain(p.Network, p.ContainerID)) {
			continue // no program to have made rules with, or no rule (one netlink lookup)
		}
		if err := teardownPortMapIPT(ipt{f}, p); err != nil {
			errs = append(errs, fmt.Errorf("tear down port mappings for %s (%s): %w", p.ContainerID, f, err))
		}
	}
	if err := teardownPortMapNFT(p); err != nil {
		errs = append(errs, fmt.Errorf("tear down port mappings for %s (nftables): %w", p.ContainerID, err))
	}
	return errors.Join(errs...)
}

// CheckPortMap reports, naming the first missing rule, whether p's rules are in place.
func CheckPortMap(p PortMap) error {
	if err := CheckBackend(p.backendKey(), p.Backend); err != nil {
		return err
	}
	if err := checkName(p.Network); err != nil {
		return err
	}
	if len(p.Mappings) == 0 {
		return nil
	}
	if ResolveBackend(p.Backend) == BackendNFTables {
		return checkPortMapNFT(p)
	}
	for _, ip := range p.IPs {
		if err := checkPortMapIPT(ipt{familyOf(ip.Addr())}, p, ip); err != nil {
			return err
		}
	}
	return nil
}

// GCPortMap removes the port mapping rules of every container of network not in keep,
// found by the comments of their entry rules. It keeps going on errors and returns them all.
func GCPortMap(backend, network string, keep []Attachment) error {
	return gcBoth(network, keep, "port mappings", isDNATChain, gcPortMapIPT, gcPortMapNFT)
}

// Mark is the "%#x/%#x" mark value and mask of a mark bit, as the reference writes it.
func Mark(bit int) string {
	v := uint32(1) << uint(bit)
	return fmt.Sprintf("%#x/%#x", v, v)
}

func lower(s string) string { return strings.ToLower(s) }
