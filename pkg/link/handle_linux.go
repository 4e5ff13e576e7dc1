// Package link holds the netlink helpers the plugins share: one netlink handle per netns,
// bridges, veth pairs, addresses, routes and sysctls.
package link

import (
	"fmt"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Handle is a netlink handle bound to one network namespace, opened without moving any thread
// into it; NS is that namespace, for the few calls (sysctls, sockets) that must run inside it.
type Handle struct {
	*netlink.Handle
	NS ns.NetNS
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

// Close releases the netlink socket and the netns file.
func (h *Handle) Close() {
	h.Handle.Close()
	h.NS.Close()
}
