package link

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// SpoofCheck drops frames entering the bridge from a host veth unless their source MAC is the
// container's. Its nftables layout is the reference bridge plugin's (table bridge nat, base
// chain PREROUTING, chains cni-br-iface-<id> and cni-br-iface-<id>-mac, rules commented
// "macspoofchk-<id>"), so either implementation removes what the other made. It is written
// over nftables netlink in one batch, in the calling thread's netns.
type SpoofCheck struct {
	HostIface string           // the host veth
	MAC       net.HardwareAddr // the container interface's MAC
	ID        string           // "<containerID>-<ifname>"
}

var spoofTable = &nftables.Table{Family: nftables.TableFamilyBridge, Name: "nat"}

func (s SpoofCheck) chains() (base, iface, mac *nftables.Chain) {
	prio := nftables.ChainPriority(-300)
	accept := nftables.ChainPolicyAccept
	base = &nftables.Chain{Table: spoofTable, Name: "PREROUTING", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: &prio, Policy: &accept}
	iface = &nftables.Chain{Table: spoofTable, Name: "cni-br-iface-" + s.ID}
	mac = &nftables.Chain{Table: spoofTable, Name: iface.Name + "-mac"}
	return base, iface, mac
}

func (s SpoofCheck) comment() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, "macspoofchk-"+s.ID)
}

// Setup installs the rules (table and base chain are created when absent).
func (s SpoofCheck) Setup() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("spoof check: %w", err)
	}
	base, iface, mac := s.chains()
	c.AddTable(spoofTable)
	c.AddChain(base)
	c.AddChain(iface)
	c.AddChain(mac)
	c.FlushChain(iface)
	c.FlushChain(mac)
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, s.HostIface)
	c.AddRule(&nftables.Rule{Table: spoofTable, Chain: base, UserData: s.comment(), Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: iface.Name},
	}})
	c.AddRule(&nftables.Rule{Table: spoofTable, Chain: iface, UserData: s.comment(), Exprs: []expr.Any{
		&expr.Verdict{Kind: expr.VerdictJump, Chain: mac.Name},
	}})
	c.AddRule(&nftables.Rule{Table: spoofTable, Chain: mac, UserData: s.comment(), Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(s.MAC)},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}})
	c.AddRule(&nftables.Rule{Table: spoofTable, Chain: mac, UserData: s.comment(), Exprs: []expr.Any{
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("spoof check for %s: %w", s.HostIface, err)
	}
	return nil
}

// Teardown removes the base chain's jump and both chains of s.ID; absent pieces are fine.
// HostIface and MAC are not needed.
func (s SpoofCheck) Teardown() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("spoof check teardown: %w", err)
	}
	base, iface, mac := s.chains()
	rules, err := c.GetRules(spoofTable, base)
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("spoof check teardown: list %s: %w", base.Name, err)
	}
	for _, r := range rules {
		if bytes.Equal(r.UserData, s.comment()) {
			if err := c.DelRule(r); err != nil {
				return fmt.Errorf("spoof check teardown: %w", err)
			}
		}
	}
	c.DelChain(iface)
	c.DelChain(mac)
	if err := c.Flush(); err == nil || !errors.Is(err, syscall.ENOENT) {
		if err != nil {
			return fmt.Errorf("spoof check teardown: %w", err)
		}
		return nil
	}
	// Something was already gone: remove what is left piece by piece.
	for _, r := range rules {
		if bytes.Equal(r.UserData, s.comment()) {
			_ = c.DelRule(r)
			_ = c.Flush()
		}
	}
	for _, ch := range []*nftables.Chain{iface, mac} {
		c.DelChain(ch)
		if err := c.Flush(); err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("spoof check teardown: delete chain %s: %w", ch.Name, err)
		}
	}
	return nil
}
