// Package link holds the netlink helpers the plugins share: one netlink handle per netns,
// bridges, veth pairs, addresses, routes and sysctls.
package link

import (
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Handle is a netlink handle bound to one network namespace, opened without moving any thread
// into it; NS is that namespace, for the few calls (sysctls, sockets) that must run inside it.
type Handle struct {
	*netlink.Handle
	NS ns.NetNS
	// current is true when NS is the namespace the process runs in: sysctls need no switch.
	current bool
}

// OpenHandle opens a netlink handle in the netns at path. An absent path gives an
// ns.NSPathNotExistErr (test it with errors.As), so DEL can treat a gone netns as done.
func OpenHandle(path string) (*Handle, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(netns.NsHandle(int(n.Fd())))
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlink handle in %s: %w", path, err)
	}
	return &Handle{Handle: h, NS: n}, nil
}

// OpenCurrent opens a netlink handle in the netns the process runs in (a plugin's host netns).
// The plugin binaries never switch the whole process, so every thread stays in it.
func OpenCurrent() (*Handle, error) {
	n, err := ns.GetCurrentNS()
	if err != nil {
		return nil, fmt.Errorf("open current netns: %w", err)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlink handle in current netns: %w", err)
	}
	return &Handle{Handle: h, NS: n, current: true}, nil
}

// Do runs fn on a thread inside the handle's netns (directly when that is the current one).
func (h *Handle) Do(fn func() error) error {
	if h.current {
		return fn()
	}
	return h.NS.Do(func(ns.NetNS) error { return fn() })
}

// Fd is the netns file descriptor, for moving links into this netns.
func (h *Handle) Fd() netlink.NsFd { return netlink.NsFd(int(h.NS.Fd())) }

// Close releases the netlink socket and the netns file.
func (h *Handle) Close() {
	h.Handle.Close()
	h.NS.Close()
}

// InvalidNetNS turns a CNI_NETNS that is not there or is not a network namespace into CNI
// error code 8 (invalid netns) naming the variable; other errors pass unchanged. ADD and CHECK
// use it; DEL treats a gone netns as done instead.
func InvalidNetNS(path string, err error) error {
	var gone ns.NSPathNotExistErr
	var notNS ns.NSPathNotNSErr
	if errors.As(err, &gone) || errors.As(err, &notNS) {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("invalid CNI_NETNS %q: %v", path, err), "")
	}
	return err
}
