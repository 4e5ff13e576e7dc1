package link

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink"
)

// PortSpec is how a bridge port (a host veth) behaves.
type PortSpec struct {
	Hairpin  bool
	Isolated bool
	// Vlan is the access VLAN (pvid, untagged); 0 for none.
	Vlan int
	// Trunk are tagged VLANs, sorted and without duplicates.
	Trunk []int
	// PreserveDefaultVlan keeps the bridge's default pvid on the port when VLANs are set.
	PreserveDefaultVlan bool
}

// ConfigurePort applies s to a freshly attached port of br. A new port starts with hairpin
// and isolation off and only the bridge's default pvid, so only what differs is written.
func (h *Handle) ConfigurePort(br *netlink.Bridge, port netlink.Link, s PortSpec) error {
	name := port.Attrs().Name
	if s.Hairpin {
		if err := h.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("set hairpin mode on %q: %w", name, err)
		}
	}
	if s.Isolated {
		if err := h.LinkSetIsolated(port, true); err != nil {
			return fmt.Errorf("set port isolation on %q: %w", name, err)
		}
	}
	if s.Vlan == 0 && len(s.Trunk) == 0 {
		return nil
	}
	if !s.PreserveDefaultVlan {
		if err := h.dropDefaultVlan(br, port); err != nil {
			return fmt.Errorf("remove default vlan on %q: %w", name, err)
		}
	}
	if s.Vlan != 0 {
		if err := h.BridgeVlanAdd(port, uint16(s.Vlan), true, true, false, true); err != nil {
			return fmt.Errorf("set vlan %d on %q: %w", s.Vlan, name, err)
		}
	}
	for _, r := range vlanRanges(s.Trunk) {
		var err error
		if r[0] == r[1] {
			err = h.BridgeVlanAdd(port, uint16(r[0]), false, false, false, true)
		} else {
			err = h.BridgeVlanAddRange(port, uint16(r[0]), uint16(r[1]), false, false, false, true)
		}
		if err != nil {
			return fmt.Errorf("set trunk vlans %d-%d on %q: %w", r[0], r[1], name, err)
		}
	}
	if s.Vlan == 0 {
		// A trunk without an access VLAN keeps VLAN 1 as its native (untagged) VLAN.
		if err := h.BridgeVlanAdd(port, 1, true, true, false, true); err != nil {
			return fmt.Errorf("set native vlan 1 on %q: %w", name, err)
		}
	}
	return nil
}

// dropDefaultVlan removes the bridge's default pvid from a new port. When the bridge does not
// report it, the port's VLANs are read from a dump.
func (h *Handle) dropDefaultVlan(br *netlink.Bridge, port netlink.Link) error {
	var vids []uint16
	if br.VlanDefaultPVID != nil {
		if *br.VlanDefaultPVID != 0 {
			vids = []uint16{*br.VlanDefaultPVID}
		}
	} else {
		all, err := h.BridgeVlanList()
		if err != nil {
			return err
		}
		for _, v := range all[int32(port.Attrs().Index)] {
			vids = append(vids, v.Vid)
		}
	}
	for _, vid := range vids {
		if err := h.BridgeVlanDel(port, vid, false, false, false, true); err != nil && !errors.Is(err, syscall.ENOENT) {
			return err
		}
	}
	return nil
}

// vlanRanges compresses sorted VLAN IDs into inclusive [first, last] runs.
func vlanRanges(ids []int) [][2]int {
	var out [][2]int
	for _, id := range ids {
		if n := len(out); n > 0 && out[n-1][1]+1 == id {
			out[n-1][1] = id
			continue
		}
		out = append(out, [2]int{id, id})
	}
	return out
}
