package netfilter

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func udpEntries(t *testing.T, node *testenv.Node, port uint16) int {
	t.Helper()
	n := 0
	err := node.Do(func() error {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		for _, f := range flows {
			if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.DstPort == port {
				n++
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDeleteUDPConntrack: a netns that tracks nothing costs no conntrack dump; one with an
// entry for the port gets one dump, and the entry goes (other ports' entries stay).
func TestDeleteUDPConntrack(t *testing.T) {
	testenv.RequireRoot(t)
	node := testenv.NewNode(t)
	dumps := func(fn func() error) int64 {
		t.Helper()
		before := conntrackDumps.Load()
		if err := node.Do(fn); err != nil {
			t.Fatal(err)
		}
		return conntrackDumps.Load() - before
	}
	if n := dumps(func() error { return DeleteUDPConntrack(IPv4, []int{5353}) }); n != 0 {
		t.Fatalf("%d conntrack dumps in a netns tracking nothing, want 0", n)
	}
	// A conntrack match makes the netns track connections; two datagrams to closed local
	// ports leave two entries.
	node.MustExec(t, "iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT")
	if err := node.Do(func() error {
		for _, p := range []string{"5353", "5354"} {
			c, err := net.Dial("udp4", "127.0.0.1:"+p)
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte("x"))
			c.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if udpEntries(t, node, 5353) == 0 || udpEntries(t, node, 5354) == 0 {
		t.Fatal("the datagrams left no conntrack entry: the test would prove nothing")
	}
	if n := dumps(func() error { return DeleteUDPConntrack(IPv4, []int{5353}) }); n != 1 {
		t.Fatalf("%d conntrack dumps with entries present, want 1", n)
	}
	if n := udpEntries(t, node, 5353); n != 0 {
		t.Fatalf("%d entries for port 5353 left", n)
	}
	if udpEntries(t, node, 5354) == 0 {
		t.Fatal("the entry of another port was deleted")
	}
}
