package netfilter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Teardown over nftables netlink. With iptables on its nf_tables backend (iptables-nft), the
// rules iptables-restore wrote are nftables rules: a container's chain and the jumps to it can
// be found with two small netlink dumps and removed in one atomic netlink batch, by rule
// handle, without running a program and without the whole-table cache that a -D makes
// iptables-nft fetch. Nothing is written this way but deletions, so no iptables match or
// target ever has to be encoded here.

// iptablesOnNFT tells whether the family's iptables-restore is iptables-nft (it resolves to
// xtables-nft-multi). A wrapper script or the legacy backend gives false: their rules may
// live where netlink does not see them, so the iptables-restore path is used. (A PATH lookup
// and a readlink: cheaper than caching it right.)
func iptablesOnNFT(f Family) bool {
	p, err := exec.LookPath(ipt{f}.prog("-restore"))
	if err != nil {
		return false
	}
	real, err := filepath.EvalSymlinks(p)
	return err == nil && strings.Contains(filepath.Base(real), "nft")
}

// jumpingRules returns the handles of the rules of chain that jump (or go) to target. It reads
// one netlink dump of that chain and decodes only each rule's handle and whether its
// expressions name target (a verdict is the only expression that holds a chain name; the
// per-container names are 28 characters of a sha512). Decoding every expression of a
// thousand iptables-nft rules (as github.com/google/nftables does) costs tens of
// milliseconds; and the receive buffer is large, as iptables' own, because the kernel sizes
// its dump messages by the reader's last buffer: a small one means hundreds of round trips.
func jumpingRules(fam nftables.TableFamily, table, chain, target string) ([]uint64, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_RULE_TABLE, table)
	ae.String(unix.NFTA_RULE_CHAIN, chain)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	body := append([]byte{byte(fam), unix.NFNETLINK_V0, 0, 0}, attrs...)
	req := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(req[0:4], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(req[4:6], uint16(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETRULE))
	binary.NativeEndian.PutUint16(req[6:8], uint16(unix.NLM_F_REQUEST|unix.NLM_F_DUMP))
	binary.NativeEndian.PutUint32(req[8:12], 1)
	req = append(req, body...)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	want := []byte(target + "\x00")
	var handles []uint64
	buf := make([]byte, 256<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return handles, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(m.Data[:4])); e != 0 {
						return nil, unix.Errno(-e)
					}
				}
				return handles, nil
			}
			if len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				return nil, err
			}
			ad.ByteOrder = binary.BigEndian
			var handle uint64
			jumps := false
			for ad.Next() {
				switch ad.Type() {
				case unix.NFTA_RULE_HANDLE:
					handle = ad.Uint64()
				case unix.NFTA_RULE_EXPRESSIONS:
					jumps = bytes.Contains(ad.Bytes(), want)
				}
			}
			if err := ad.Err(); err != nil {
				return nil, err
			}
			if jumps && handle != 0 {
				handles = append(handles, handle)
			}
		}
	}
}

// nftTeardown removes target and every rule of the chains in from that jumps to it, in one
// netlink batch, in the caller's network namespace. done is false when this path does not
// apply (iptables not on nf_tables, a dump it cannot read, a batch that keeps failing): the
// caller then uses iptables-restore, which also reports what is wrong.
func nftTeardown(f Family, from []string, target string) (done bool) {
	if !iptablesOnNFT(f) {
		return false
	}
	fam := nftables.TableFamilyIPv4
	if f == IPv6 {
		fam = nftables.TableFamilyIPv6
	}
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return false
	}
	defer c.CloseLasting()
	table := &nftables.Table{Name: "nat", Family: fam}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if _, err := c.ListChain(table, target); err != nil {
			// Absent (or no nat table at all): nothing can jump to it either.
			return isNotFound(err)
		}
		for _, name := range from {
			handles, err := jumpingRules(fam, table.Name, name, target)
			if err != nil {
				if isNotFound(err) {
					continue
				}
				return false
			}
			for _, h := range handles {
				r := &nftables.Rule{Table: table, Chain: &nftables.Chain{Name: name, Table: table}, Handle: h}
				if err := c.DelRule(r); err != nil {
					return false
				}
			}
		}
		ch := &nftables.Chain{Name: target, Table: table}
		c.FlushChain(ch)
		c.DelChain(ch)
		if err := c.Flush(); err == nil {
			return true
		}
		// A concurrent change (a rule gone, a new jump): read again.
	}
	return false
}

func isNotFound(err error) bool {
	return err != nil && (errors.Is(err, unix.ENOENT) || strings.Contains(err.Error(), "no such file or directory"))
}
