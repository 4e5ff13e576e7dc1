package loopback

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/cni-suite/cni-suite/pkg/link"
)

// badNetns turns a CNI_NETNS that is not there or is not a network namespace into code 8
// (invalid netns) naming the variable; other errors pass unchanged. ADD and CHECK use it; DEL
// treats a gone netns as done instead.
func badNetns(path string, err error) error {
	var gone ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &gone) || errors.As(err, &notNS) {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("invalid CNI_NETNS %q: %v", path, err), "")
	}
	return err
}

// withHandle runs fn with a netlink handle bound to the netns at path, without moving any thread.
func withHandle(path string, fn func(h *link.Handle, lo netlink.Link) error) error {
	h, err := link.OpenHandle(path)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName(ifName)
	if err != nil {
		return fmt.Errorf("find %s in %s: %w", ifName, path, err)
	}
	return fn(h, lo)
}

func up(path string) ([]net.IPNet, error) {
	var out []net.IPNet
	err := withHandle(path, func(h *link.Handle, lo netlink.Link) error {
		if err := h.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set %s up: %w", ifName, err)
		}
		addrs, err := h.AddrList(lo, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list %s addresses: %w", ifName, err)
		}
		// One address per family, IPv4 first, as the reference reports them.
		var v4, v6 *net.IPNet
		for _, a := range addrs {
			if !a.IP.IsLoopback() {
				return fmt.Errorf("loopback interface found with non-loopback address %q", a.IP)
			}
			if a.IP.To4() != nil && v4 == nil {
				v4 = a.IPNet
			} else if a.IP.To4() == nil && v6 == nil {
				v6 = a.IPNet
			}
		}
		for _, a := range []*net.IPNet{v4, v6} {
			if a != nil {
				out = append(out, *a)
			}
		}
		return nil
	})
	return out, err
}

func down(path string) error {
	err := withHandle(path, func(h *link.Handle, lo netlink.Link) error {
		if err := h.LinkSetDown(lo); err != nil {
			return fmt.Errorf("set %s down: %w", ifName, err)
		}
		return nil
	})
	var gone ns.NSPathNotExistErr
	if errors.As(err, &gone) {
		return nil
	}
	return err
}

func check(path string) error {
	return withHandle(path, func(h *link.Handle, lo netlink.Link) error {
		if lo.Attrs().Flags&net.FlagUp == 0 {
			return errors.New("loopback interface is down")
		}
		addrs, err := h.AddrList(lo, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list %s addresses: %w", ifName, err)
		}
		for _, a := range addrs {
			if !a.IP.IsLoopback() {
				return fmt.Errorf("loopback interface has non-loopback address %q", a.IP)
			}
		}
		return nil
	})
}
