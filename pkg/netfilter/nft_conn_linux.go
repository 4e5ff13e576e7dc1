package netfilter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The nftables backend talks to the kernel over one NETLINK_NETFILTER socket: rule dumps to
// read state, and one batch (NFNL_MSG_BATCH_BEGIN ... END) per verb to write it, which the
// kernel applies as one transaction: all of it or nothing. Rule expressions are encoded with
// github.com/google/nftables/expr; the messages around them are built here, because
// google/nftables v0.3.0 cannot carry table and chain comments (NFTA_TABLE_USERDATA,
// NFTA_CHAIN_USERDATA), which the reference's layout has and `nft list ruleset` shows.
// No program is run.

// Attributes that golang.org/x/sys/unix does not name.
const (
	nftaTableUserdata = 6  // NFTA_TABLE_USERDATA
	nftaChainUserdata = 12 // NFTA_CHAIN_USERDATA
	udataComment      = 0  // NFTNL_UDATA_{TABLE,CHAIN,RULE}_COMMENT
	maxCommentLen     = 128
)

// nftOps counts the netlink batches and dumps of this process (tests and benchmarks).
var nftOps atomic.Int64

// recordBatches keeps what the last batch held in lastBatch (tests).
var (
	recordBatches bool
	batchMu       sync.Mutex
	lastBatch     []string
)

// NFTOps returns how many nftables netlink requests (dumps and batches) the engine has made.
func NFTOps() int64 { return nftOps.Load() }

// nftConn is one netlink socket in the network namespace of the thread that opened it.
type nftConn struct {
	fd    int
	seq   uint32
	buf   []byte
	netns uint64
}

func nftOpen() (*nftConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nftables netlink socket: %w", err)
	}
	// Errors carry only the failed message's header, not the whole message back.
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	// A batch that deletes thousands of rules (GC) fits in one send.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	// A bound on every wait for the kernel's answer; it answers within the send in practice.
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
	return &nftConn{fd: fd, seq: 1, buf: make([]byte, 256<<10)}, nil
}

func (c *nftConn) close() { unix.Close(c.fd) }

// nlmsg is one netlink message of the nftables subsystem (or a batch delimiter, resID set).
func nlmsg(typ, flags uint16, seq uint32, fam byte, resID uint16, attrs []byte) []byte {
	n := unix.NLMSG_HDRLEN + 4 + len(attrs)
	b := make([]byte, n, (n+3)&^3)
	binary.NativeEndian.PutUint32(b[0:4], uint32(n))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], flags)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	b[16], b[17] = fam, unix.NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:20], resID)
	copy(b[20:], attrs)
	return b[:cap(b)]
}

func msgType(m int) uint16 { return uint16(unix.NFNL_SUBSYS_NFTABLES<<8 | m) }

// encode builds attributes; nftables numbers are big-endian.
func encode(fn func(ae *netlink.AttributeEncoder)) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	fn(ae)
	b, err := ae.Encode()
	if err != nil {
		panic(fmt.Sprintf("nftables attributes: %v", err)) // only fixed, valid shapes are encoded
	}
	return b
}

func commentData(c string) []byte {
	return userdata.AppendString(nil, udataComment, c)
}

// nftOp is one message of a batch and what it means, for error messages.
type nftOp struct {
	typ   uint16
	flags uint16
	fam   byte
	attrs []byte
	what  string
}

// nftBatch is one transaction.
type nftBatch struct{ ops []nftOp }

func (b *nftBatch) empty() bool { return b == nil || len(b.ops) == 0 }

func (b *nftBatch) add(m int, flags uint16, fam byte, what string, attrs []byte) {
	b.ops = append(b.ops, nftOp{typ: msgType(m), flags: flags, fam: fam, attrs: attrs, what: what})
}

// addTable makes the table unless it exists (nft's "add table": an existing one is kept as it is).
func (b *nftBatch) addTable(fam byte, name, comment string) {
	b.add(unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, fam, "add table "+famName(fam)+" "+name, encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, name)
		ae.Uint32(unix.NFTA_TABLE_FLAGS, 0)
		if comment != "" {
			ae.Bytes(nftaTableUserdata, commentData(comment))
		}
	}))
}

// baseHook makes a chain a base chain: its type, hook and priority.
type baseHook struct {
	typ      string // "nat"
	hook     uint32 // unix.NF_INET_*
	priority int32
}

// nftChainSpec is one chain of a layout.
type nftChainSpec struct {
	name    string
	base    *baseHook
	comment string
}

func (b *nftBatch) addChain(fam byte, table string, ch nftChainSpec) {
	b.add(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, fam, "add chain "+famName(fam)+" "+table+" "+ch.name, encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
		ae.String(unix.NFTA_CHAIN_NAME, ch.name)
		if ch.base != nil {
			ae.Nested(unix.NFTA_CHAIN_HOOK, func(nae *netlink.AttributeEncoder) error {
				nae.Uint32(unix.NFTA_HOOK_HOOKNUM, ch.base.hook)
				nae.Uint32(unix.NFTA_HOOK_PRIORITY, uint32(ch.base.priority))
				return nil
			})
			ae.String(unix.NFTA_CHAIN_TYPE, ch.base.typ)
		}
		if ch.comment != "" {
			ae.Bytes(nftaChainUserdata, commentData(ch.comment))
		}
	}))
}

func (b *nftBatch) flushChain(fam byte, table, chain string) {
	b.add(unix.NFT_MSG_DELRULE, 0, fam, "flush chain "+famName(fam)+" "+table+" "+chain, encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, chain)
	}))
}

// addRule appends r to its chain.
func (b *nftBatch) addRule(fam byte, table string, r nftRule) {
	b.add(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, fam, "add rule "+r.describe(fam, table), encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, r.chain)
		ae.Bytes(unix.NLA_F_NESTED|unix.NFTA_RULE_EXPRESSIONS, marshalExprs(fam, r.exprs))
		if r.comment != "" {
			ae.Bytes(unix.NFTA_RULE_USERDATA, commentData(r.comment))
		}
	}))
}

func (b *nftBatch) delRule(fam byte, table string, r nftGotRule) {
	what := fmt.Sprintf("delete rule %s %s %s handle %d", famName(fam), table, r.chain, r.handle)
	b.add(unix.NFT_MSG_DELRULE, 0, fam, what, encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		ae.String(unix.NFTA_RULE_CHAIN, r.chain)
		ae.Uint64(unix.NFTA_RULE_HANDLE, r.handle)
	}))
}

func marshalExprs(fam byte, exprs []expr.Any) []byte {
	ae := netlink.NewAttributeEncoder()
	for _, e := range exprs {
		b, err := expr.Marshal(fam, e)
		if err != nil {
			panic(fmt.Sprintf("nftables expression %T: %v", e, err)) // only fixed, valid shapes are encoded
		}
		ae.Bytes(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, b)
	}
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return b
}

// nftError is a batch the kernel refused: the message that failed and why.
type nftError struct {
	what  string
	errno unix.Errno
}

func (e *nftError) Error() string {
	if e.what == "" {
		return fmt.Sprintf("nftables transaction: %v", e.errno)
	}
	return fmt.Sprintf("nftables: %s: %v", e.what, e.errno)
}

func (e *nftError) Unwrap() error { return e.errno }

// commit sends b as one transaction and waits for the kernel's verdict on every message.
func (c *nftConn) commit(b *nftBatch) error {
	if b.empty() {
		return nil
	}
	nftOps.Add(1)
	if recordBatches {
		var ops []string
		for _, op := range b.ops {
			ops = append(ops, op.what)
		}
		batchMu.Lock()
		lastBatch = ops
		batchMu.Unlock()
	}
	first := c.seq
	var out []byte
	out = append(out, nlmsg(unix.NFNL_MSG_BATCH_BEGIN, unix.NLM_F_REQUEST, first, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)...)
	for i, op := range b.ops {
		out = append(out, nlmsg(op.typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK|op.flags, first+1+uint32(i), op.fam, 0, op.attrs)...)
	}
	end := first + 1 + uint32(len(b.ops))
	out = append(out, nlmsg(unix.NFNL_MSG_BATCH_END, unix.NLM_F_REQUEST, end, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES, nil)...)
	c.seq = end + 1
	if err := unix.Sendto(c.fd, out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("nftables transaction: send: %w", err)
	}
	// Every message asked for an answer; the kernel has queued them all once the send returns
	// (a refused batch header gets one answer, to the BEGIN message).
	answered := 0
	var firstErr *nftError
	for answered < len(b.ops) {
		// The kernel answers within the send; after an error it may skip the answers of
		// messages it did not process, so what is queued is all there is.
		flags := 0
		if firstErr != nil {
			flags = unix.MSG_DONTWAIT
		}
		msgs, err := c.recvFlags(flags)
		if firstErr != nil && (err == unix.EAGAIN || err == unix.EWOULDBLOCK) {
			break
		}
		if err != nil {
			return fmt.Errorf("nftables transaction: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != unix.NLMSG_ERROR || m.Header.Seq < first || m.Header.Seq > end {
				continue
			}
			errno := unix.Errno(0)
			if len(m.Data) >= 4 {
				errno = unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data[:4])))
			}
			if m.Header.Seq == first || m.Header.Seq == end {
				if errno != 0 {
					return &nftError{errno: errno}
				}
				continue
			}
			answered++
			if errno != 0 && firstErr == nil {
				firstErr = &nftError{what: b.ops[m.Header.Seq-first-1].what, errno: errno}
			}
		}
	}
	if firstErr != nil {
		return firstErr
	}
	return nil
}

func (c *nftConn) recv() ([]syscall.NetlinkMessage, error) { return c.recvFlags(0) }

func (c *nftConn) recvFlags(flags int) ([]syscall.NetlinkMessage, error) {
	for {
		n, _, err := unix.Recvfrom(c.fd, c.buf, flags)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		return syscall.ParseNetlinkMessage(c.buf[:n])
	}
}

// nftGotRule is a rule read from the kernel: where it is, its handle, comment and expressions
// (as the kernel encodes them, NFTA_RULE_EXPRESSIONS).
type nftGotRule struct {
	fam     byte
	table   string
	chain   string
	handle  uint64
	comment string
	exprs   []byte
}

var errDumpInterrupted = errors.New("nftables dump interrupted by a concurrent change")

// maxDumpAttempts bounds the dumps of one read that commits by other programs interrupt.
const maxDumpAttempts = 16

// rules dumps the rules of table (of the ip and ip6 families when fam is NFPROTO_UNSPEC: the
// kernel stops a dump filtered by table name after the first table of that name), of one
// chain when chain is set. A missing table or chain has no rules.
func (c *nftConn) rules(fam byte, table, chain string) ([]nftGotRule, error) {
	return c.rulesOf(fam, table, chain, nil)
}

// allChains keeps the expressions of every rule.
func allChains(string) bool { return true }

// rulesOf is rules, with the expressions of the rules of the chains exprs selects (nil: none).
func (c *nftConn) rulesOf(fam byte, table, chain string, exprs func(chain string) bool) ([]nftGotRule, error) {
	if fam == unix.NFPROTO_UNSPEC {
		v4, err := c.rulesOf(famIP, table, chain, exprs)
		if err != nil {
			return nil, err
		}
		v6, err := c.rulesOf(famIP6, table, chain, exprs)
		return append(v4, v6...), err
	}
	for attempt := 0; ; attempt++ {
		rs, _, err := c.dumpRules(fam, table, chain, exprs)
		if !errors.Is(err, errDumpInterrupted) || attempt+1 == maxDumpAttempts {
			return rs, err
		}
	}
}

func (c *nftConn) dumpRules(fam byte, table, chain string, exprs func(chain string) bool) ([]nftGotRule, bool, error) {
	nftOps.Add(1)
	attrs := encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_RULE_TABLE, table)
		if chain != "" {
			ae.String(unix.NFTA_RULE_CHAIN, chain)
		}
	})
	seq, err := c.request(unix.NFT_MSG_GETRULE, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, fam, attrs)
	if err != nil {
		return nil, false, fmt.Errorf("nftables: list rules of %s: %w", table, err)
	}
	var out []nftGotRule
	intr := false
	for {
		msgs, err := c.recv()
		if err != nil {
			return nil, false, fmt.Errorf("nftables: list rules of %s: %w", table, err)
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				intr = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if intr {
					return nil, false, errDumpInterrupted
				}
				return out, true, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data[:4]))); e != 0 {
						if e == unix.ENOENT {
							return nil, false, nil
						}
						return nil, false, fmt.Errorf("nftables: list rules of %s: %w", table, e)
					}
				}
				return out, true, nil
			}
			if len(m.Data) < 4 {
				continue
			}
			r, err := parseNFTRule(m.Data)
			if err != nil {
				return nil, false, fmt.Errorf("nftables: list rules of %s: %w", table, err)
			}
			if exprs != nil && exprs(r.chain) {
				r.exprs = bytes.Clone(r.exprs)
			} else {
				r.exprs = nil
			}
			out = append(out, r)
		}
	}
}

func parseNFTRule(data []byte) (nftGotRule, error) {
	// Attributes are walked in place (a dump of thousands of rules is parsed per verb); only
	// what is kept is copied.
	r := nftGotRule{fam: data[0]}
	b := data[4:]
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			return r, fmt.Errorf("malformed rule attribute")
		}
		v := b[4:l]
		switch binary.NativeEndian.Uint16(b[2:4]) & nlaTypeMask {
		case unix.NFTA_RULE_TABLE:
			r.table = cstring(v)
		case unix.NFTA_RULE_CHAIN:
			r.chain = cstring(v)
		case unix.NFTA_RULE_HANDLE:
			if len(v) == 8 {
				r.handle = binary.BigEndian.Uint64(v)
			}
		case unix.NFTA_RULE_EXPRESSIONS:
			r.exprs = v // valid until the next read on the socket
		case unix.NFTA_RULE_USERDATA:
			if c, ok := userdata.GetString(v, udataComment); ok {
				r.comment = c
			}
		}
		b = b[(l+3)&^3:]
	}
	return r, nil
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// chainExists asks for one chain.
func (c *nftConn) chainExists(fam byte, table, chain string) (bool, error) {
	return c.exists(unix.NFT_MSG_GETCHAIN, fam, encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_CHAIN_TABLE, table)
		ae.String(unix.NFTA_CHAIN_NAME, chain)
	}), fmt.Sprintf("chain %s %s %s", famName(fam), table, chain))
}

// tableExists asks for one table.
func (c *nftConn) tableExists(fam byte, table string) (bool, error) {
	return c.exists(unix.NFT_MSG_GETTABLE, fam, encode(func(ae *netlink.AttributeEncoder) {
		ae.String(unix.NFTA_TABLE_NAME, table)
	}), fmt.Sprintf("table %s %s", famName(fam), table))
}

func (c *nftConn) exists(msg int, fam byte, attrs []byte, what string) (bool, error) {
	got, err := c.get(msg, fam, attrs, what)
	return got != nil, err
}

// request sends one request message with the next sequence number and returns that number.
func (c *nftConn) request(msg int, flags uint16, fam byte, attrs []byte) (uint32, error) {
	seq := c.seq
	c.seq++
	req := nlmsg(msgType(msg), flags, seq, fam, 0, attrs)
	return seq, unix.Sendto(c.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// get asks for one object and returns its attributes; nil when it does not exist.
func (c *nftConn) get(msg int, fam byte, attrs []byte, what string) ([]byte, error) {
	nftOps.Add(1)
	seq, err := c.request(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK, fam, attrs)
	if err != nil {
		return nil, err
	}
	var found []byte
	for {
		msgs, err := c.recv()
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			if m.Header.Type != unix.NLMSG_ERROR {
				if len(m.Data) >= 4 {
					found = bytes.Clone(m.Data[4:])
				}
				continue
			}
			if len(m.Data) >= 4 {
				if e := unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data[:4]))); e != 0 {
					if e == unix.ENOENT {
						return nil, nil
					}
					return nil, fmt.Errorf("nftables: get %s: %w", what, e)
				}
			}
			return found, nil
		}
	}
}

// chainStates tells, for each spec, whether the chain exists and, if so, whether it is what
// spec says (a regular chain, or a base chain of the same type, hook and priority). The
// requests go in one send, and the kernel answers them in order.
func (c *nftConn) chainStates(fam byte, table string, specs []nftChainSpec) (exists, same []bool, err error) {
	nftOps.Add(1)
	first := c.seq
	var out []byte
	for _, spec := range specs {
		out = append(out, nlmsg(msgType(unix.NFT_MSG_GETCHAIN), unix.NLM_F_REQUEST|unix.NLM_F_ACK, c.seq, fam, 0, encode(func(ae *netlink.AttributeEncoder) {
			ae.String(unix.NFTA_CHAIN_TABLE, table)
			ae.String(unix.NFTA_CHAIN_NAME, spec.name)
		}))...)
		c.seq++
	}
	if err := unix.Sendto(c.fd, out, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, nil, err
	}
	exists, same = make([]bool, len(specs)), make([]bool, len(specs))
	for answered := 0; answered < len(specs); {
		msgs, err := c.recv()
		if err != nil {
			return nil, nil, err
		}
		for _, m := range msgs {
			if m.Header.Seq < first || m.Header.Seq >= first+uint32(len(specs)) {
				continue
			}
			i := int(m.Header.Seq - first)
			if m.Header.Type != unix.NLMSG_ERROR {
				if len(m.Data) >= 4 {
					exists[i] = true
					same[i] = chainIs(m.Data[4:], specs[i])
				}
				continue
			}
			answered++
			if len(m.Data) >= 4 {
				if e := unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data[:4]))); e != 0 && e != unix.ENOENT {
					return nil, nil, fmt.Errorf("nftables: get chain %s %s %s: %w", famName(fam), table, specs[i].name, e)
				}
			}
		}
	}
	return exists, same, nil
}

// chainIs tells whether a chain's attributes (as the kernel dumps them) match spec.
func chainIs(attrs []byte, spec nftChainSpec) bool {
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return false
	}
	ad.ByteOrder = binary.BigEndian
	var have *baseHook
	typ := ""
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_HOOK:
			have = &baseHook{}
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case unix.NFTA_HOOK_HOOKNUM:
						have.hook = nad.Uint32()
					case unix.NFTA_HOOK_PRIORITY:
						have.priority = int32(nad.Uint32())
					}
				}
				return nil
			})
		case unix.NFTA_CHAIN_TYPE:
			typ = ad.String()
		}
	}
	if ad.Err() != nil {
		return false
	}
	switch {
	case spec.base == nil:
		return have == nil
	case have == nil:
		return false
	}
	have.typ = typ
	return *have == *spec.base
}

// nftUsable tells whether the kernel answers nftables requests in this network namespace.
func nftUsable() bool {
	c, err := nftGet()
	if err != nil {
		return false
	}
	_, err = c.tableExists(unix.NFPROTO_INET, "cni_suite_probe")
	nftPut(c, err != nil)
	return err == nil
}

func famName(fam byte) string {
	switch fam {
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_IPV6:
		return "ip6"
	case unix.NFPROTO_INET:
		return "inet"
	}
	return fmt.Sprintf("family-%d", fam)
}

// quoteComment renders a comment as nft prints it.
func quoteComment(c string) string { return `"` + strings.ReplaceAll(c, `"`, `\"`) + `"` }

// chainNames lists the chains of table in family fam (one dump of the family's chains).
// A missing table has none.
func (c *nftConn) chainNames(fam byte, table string) ([]string, error) {
	nftOps.Add(1)
	seq, err := c.request(unix.NFT_MSG_GETCHAIN, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, fam, nil)
	if err != nil {
		return nil, err
	}
	var out []string
	for {
		msgs, err := c.recv()
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data[:4]))); e != 0 && e != unix.ENOENT {
						return nil, e
					}
				}
				return out, nil
			}
			if len(m.Data) < 4 {
				continue
			}
			ad, err := netlink.NewAttributeDecoder(m.Data[4:])
			if err != nil {
				return nil, err
			}
			var t, name string
			for ad.Next() {
				switch ad.Type() {
				case unix.NFTA_CHAIN_TABLE:
					t = ad.String()
				case unix.NFTA_CHAIN_NAME:
					name = ad.String()
				}
			}
			if t == table {
				out = append(out, name)
			}
		}
	}
}

// Sockets are kept for reuse rather than closed: the kernel makes the release of a
// NETLINK_NETFILTER socket wait until the transactions of every recent commit on the machine
// are freed, an RCU grace period after the commit (nf_tables' NETLINK_URELEASE handler
// flushes its destroy work), which costs milliseconds, tens under load, per close. A plugin
// process so pays it once, at exit. A socket belongs to the network namespace it was opened
// in; the pool keeps a few per namespace for the last few namespaces used (one, the node's,
// in a plugin; tests switch between several).
var nftPool struct {
	sync.Mutex
	byNetns []nftPooled // most recently used last
}

type nftPooled struct {
	netns uint64
	free  []*nftConn
}

const (
	poolNetns   = 4
	poolPerNetn = 4
)

// netnsID identifies the calling thread's network namespace.
func netnsID() uint64 {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0
	}
	return st.Ino
}

// nftGet returns a socket of the calling thread's network namespace, reused when one is free.
func nftGet() (*nftConn, error) {
	ns := netnsID()
	nftPool.Lock()
	for i := range nftPool.byNetns {
		e := &nftPool.byNetns[i]
		if ns != 0 && e.netns == ns && len(e.free) > 0 {
			c := e.free[len(e.free)-1]
			e.free = e.free[:len(e.free)-1]
			nftPool.Unlock()
			return c, nil
		}
	}
	nftPool.Unlock()
	c, err := nftOpen()
	if err != nil {
		return nil, err
	}
	c.netns = ns
	return c, nil
}

// nftPut gives c back after a verb; broken (a verb that failed half way may leave answers
// unread) closes it.
func nftPut(c *nftConn, broken bool) {
	if broken || c.netns == 0 {
		c.close()
		return
	}
	nftPool.Lock()
	var drop []*nftConn
	i := 0
	for i < len(nftPool.byNetns) && nftPool.byNetns[i].netns != c.netns {
		i++
	}
	var e nftPooled
	if i < len(nftPool.byNetns) {
		e = nftPool.byNetns[i]
		nftPool.byNetns = append(nftPool.byNetns[:i], nftPool.byNetns[i+1:]...)
	} else {
		e = nftPooled{netns: c.netns}
	}
	if len(e.free) < poolPerNetn {
		e.free = append(e.free, c)
	} else {
		drop = append(drop, c)
	}
	nftPool.byNetns = append(nftPool.byNetns, e)
	if len(nftPool.byNetns) > poolNetns {
		drop = append(drop, nftPool.byNetns[0].free...)
		nftPool.byNetns = nftPool.byNetns[1:]
	}
	nftPool.Unlock()
	for _, d := range drop {
		d.close()
	}
}

// nftLock serialises this engine's nftables verbs across processes (a lock file in LockDir):
// a rule dump the kernel cannot finish in one message is interrupted by any commit made
// meanwhile, and parallel ADDs and DELs of the same node's pods, each reading the shared
// chains, would otherwise keep interrupting each other. A verb holds it for a dump and a
// batch, well under a millisecond on a small node. Without a writable LockDir it goes on
// unlocked (the dumps are retried).
func nftLock() (unlock func()) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return func() {}
	}
	fd, err := os.OpenFile(filepath.Join(LockDir, "nftables.lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return func() {}
	}
	for {
		err = unix.Flock(int(fd.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		fd.Close()
		return func() {}
	}
	return func() { fd.Close() }
}

// addLayout adds to b the table and those of its chains that do not exist yet, or exist with
// another type, hook or priority (the batch then fails on them, as nft's "add chain" does).
// Declaring objects that exist already changes nothing, but makes the kernel free the update
// an RCU grace period after the commit, and until then closing the socket waits for it.
func (c *nftConn) addLayout(b *nftBatch, fam byte, table, comment string, chains []nftChainSpec) error {
	exists, same, err := c.chainStates(fam, table, chains)
	if err != nil {
		return err
	}
	var add []nftChainSpec
	for i, ch := range chains {
		if !exists[i] || !same[i] {
			add = append(add, ch)
		}
	}
	if len(add) == len(chains) {
		b.addTable(fam, table, comment)
	}
	for _, ch := range add {
		b.addChain(fam, table, ch)
	}
	return nil
}
