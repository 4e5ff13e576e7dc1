package netfilter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The expressions below are the ones the nft program generates for the reference's rule
// text (checked with `nft --debug=netlink`), so that `nft list ruleset` prints our rules
// exactly as it prints the reference's, and either implementation recognises the other's.

// nftRule is one rule of a layout: its chain, its text in nft syntax (as nft lists it; for
// messages), its expressions and its comment.
type nftRule struct {
	chain   string
	text    string
	exprs   []expr.Any
	comment string
}

func (r nftRule) describe(fam byte, table string) string {
	s := fmt.Sprintf("%s %s %s: %s", famName(fam), table, r.chain, r.text)
	if r.comment != "" {
		s += " comment " + quoteComment(r.comment)
	}
	return s
}

// ruleBuilder collects the matches of one rule in a table of family fam.
type ruleBuilder struct {
	fam   byte
	dep   byte // the network protocol already matched (inet tables: meta nfproto)
	exprs []expr.Any
	text  []string
}

func newRule(fam byte) *ruleBuilder { return &ruleBuilder{fam: fam} }

func (b *ruleBuilder) rule(chain, comment string) nftRule {
	return nftRule{chain: chain, text: strings.Join(b.text, " "), exprs: b.exprs, comment: comment}
}

func (b *ruleBuilder) add(text string, e ...expr.Any) *ruleBuilder {
	b.exprs = append(b.exprs, e...)
	if text != "" {
		b.text = append(b.text, text)
	}
	return b
}

func cmpOp(neg bool) expr.CmpOp {
	if neg {
		return expr.CmpOpNeq
	}
	return expr.CmpOpEq
}

func negText(neg bool) string {
	if neg {
		return "!= "
	}
	return ""
}

// addr matches the source or destination address against p (a host address when p is a
// full-length prefix). Like nft: a byte-aligned prefix loads only its bytes, another one
// loads the address and masks it; in an inet table the network protocol is matched first.
func (b *ruleBuilder) addr(field string, neg bool, p netip.Prefix) *ruleBuilder {
	a := p.Addr()
	proto, l3 := "ip", byte(unix.NFPROTO_IPV4)
	off := map[string]uint32{"saddr": 12, "daddr": 16}[field]
	if a.Is6() {
		proto, l3 = "ip6", unix.NFPROTO_IPV6
		off = map[string]uint32{"saddr": 8, "daddr": 24}[field]
	}
	if b.fam == unix.NFPROTO_INET && b.dep != l3 {
		b.dep = l3
		b.add("", &expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l3}})
	}
	full := a.BitLen()
	bits := p.Bits()
	masked := p.Masked().Addr().AsSlice()
	text := proto + " " + field + " " + negText(neg)
	switch {
	case bits == full:
		return b.add(text+a.String(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(full / 8)},
			&expr.Cmp{Op: cmpOp(neg), Register: 1, Data: a.AsSlice()})
	case bits > 0 && bits%8 == 0:
		return b.add(text+p.Masked().String(),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(bits / 8)},
			&expr.Cmp{Op: cmpOp(neg), Register: 1, Data: masked[:bits/8]})
	}
	mask := netip.PrefixFrom(netip.IPv6Unspecified(), bits)
	if a.Is4() {
		mask = netip.PrefixFrom(netip.IPv4Unspecified(), bits)
	}
	return b.add(text+p.Masked().String(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(full / 8)},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: uint32(full / 8), Mask: prefixMask(mask), Xor: make([]byte, full/8)},
		&expr.Cmp{Op: cmpOp(neg), Register: 1, Data: masked})
}

// prefixMask is the netmask of a prefix's length, as bytes.
func prefixMask(p netip.Prefix) []byte {
	n := p.Addr().BitLen() / 8
	out := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		out[i/8] |= 0x80 >> (i % 8)
	}
	return out
}

var l4Protos = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// dport matches the transport protocol and destination port ("tcp dport 8080").
func (b *ruleBuilder) dport(proto string, port int) *ruleBuilder {
	return b.add(fmt.Sprintf("%s dport %d", proto, port),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4Protos[proto]}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(port)})
}

func be16(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }

// dnat rewrites the destination to a:port ("dnat to 10.0.0.2:80", "dnat to [fd00::2]:80").
func (b *ruleBuilder) dnat(a netip.Addr, port int) *ruleBuilder {
	fam := uint32(unix.NFPROTO_IPV4)
	if a.Is6() {
		fam = unix.NFPROTO_IPV6
	}
	return b.add("dnat to "+netip.AddrPortFrom(a, uint16(port)).String(),
		&expr.Immediate{Register: 1, Data: a.AsSlice()},
		&expr.Immediate{Register: 2, Data: be16(port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: fam, RegAddrMin: 1, RegProtoMin: 2, Specified: true})
}

// fibLocal matches packets to a local address ("fib daddr type local").
func (b *ruleBuilder) fibLocal() *ruleBuilder {
	return b.add("fib daddr type local",
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)})
}

func (b *ruleBuilder) masquerade() *ruleBuilder { return b.add("masquerade", &expr.Masq{}) }

func (b *ruleBuilder) verdict(kind expr.VerdictKind, chain string) *ruleBuilder {
	text := map[expr.VerdictKind]string{expr.VerdictReturn: "return", expr.VerdictJump: "jump", expr.VerdictGoto: "goto"}[kind]
	if chain != "" {
		text += " " + chain
	}
	return b.add(text, &expr.Verdict{Kind: kind, Chain: chain})
}

// ifname matches the input or output interface name; a trailing '*' matches a name prefix.
func (b *ruleBuilder) ifname(key string, neg bool, name string) *ruleBuilder {
	mk := expr.MetaKeyIIFNAME
	if key == "oifname" {
		mk = expr.MetaKeyOIFNAME
	}
	data := make([]byte, unix.IFNAMSIZ)
	copy(data, name)
	if prefix, ok := strings.CutSuffix(name, "*"); ok {
		data = []byte(prefix)
	}
	return b.add(key+" "+negText(neg)+`"`+name+`"`,
		&expr.Meta{Key: mk, Register: 1},
		&expr.Cmp{Op: cmpOp(neg), Register: 1, Data: data})
}

// conditions adds the reference's conditionsV4/V6 (nft syntax) to a rule of the ip or ip6
// table. Without the nft program to compile them, a subset is understood: address matches
// ("ip saddr 10.0.0.0/8", "ip6 daddr != fd00::/8") and interface names ("iifname "eth0"",
// "oifname != lo", "iifname "veth*""). Anything else is refused, naming the word.
func (b *ruleBuilder) conditions(f Family, conds []string) error {
	tk, err := nftTokens(strings.Join(conds, " "))
	if err != nil {
		return err
	}
	for len(tk) > 0 {
		w := tk[0]
		neg := false
		val := func(n int) (string, error) {
			if len(tk) > n && (tk[n] == "==" || tk[n] == "!=") {
				neg = tk[n] == "!="
				tk = append(tk[:n], tk[n+1:]...)
			}
			if len(tk) <= n {
				return "", fmt.Errorf("%q needs a value", strings.Join(tk, " "))
			}
			return tk[n], nil
		}
		switch {
		case (w == "ip" || w == "ip6") && len(tk) > 1 && (tk[1] == "saddr" || tk[1] == "daddr"):
			v, err := val(2)
			if err != nil {
				return err
			}
			p, err := parseAddrOrPrefix(v)
			if err != nil {
				return fmt.Errorf("%s %s: %w", w, tk[1], err)
			}
			if (w == "ip") != p.Addr().Is4() {
				return fmt.Errorf("%s %s %s: not an %s address", w, tk[1], v, map[bool]string{true: "IPv4", false: "IPv6"}[w == "ip"])
			}
			if familyOf(p.Addr()) != f {
				return fmt.Errorf("%s %s %s: an %s match cannot apply to the %s table", w, tk[1], v, familyOf(p.Addr()), f)
			}
			b.addr(tk[1], neg, p)
			tk = tk[3:]
		case w == "iifname" || w == "oifname" || (w == "meta" && len(tk) > 1 && (tk[1] == "iifname" || tk[1] == "oifname")):
			if w == "meta" {
				tk = tk[1:]
				w = tk[0]
			}
			v, err := val(1)
			if err != nil {
				return err
			}
			if !validIfNamePattern(v) {
				return fmt.Errorf("%s %q: not an interface name", w, v)
			}
			b.ifname(w, neg, v)
			tk = tk[2:]
		default:
			return fmt.Errorf("%q is not supported (understood: ip/ip6 saddr/daddr [!=] <address or prefix>, iifname/oifname [!=] <name>)", strings.Join(tk, " "))
		}
	}
	return nil
}

// validIfNamePattern: an interface name the kernel allows (printable, no blank, '/' or ':'),
// shorter than IFNAMSIZ, optionally ending in '*'.
func validIfNamePattern(v string) bool {
	name := strings.TrimSuffix(v, "*")
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune(`/:*"\`, c) {
			return false
		}
	}
	return true
}

func parseAddrOrPrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an address", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// nftTokens splits nft text on blanks; a double-quoted string is one word without its quotes.
func nftTokens(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\t':
			i++
		case c == '"':
			j := strings.IndexByte(s[i+1:], '"')
			if j < 0 {
				return nil, fmt.Errorf("unterminated quote in %q", s)
			}
			out = append(out, s[i+1:i+1+j])
			i += j + 2
		default:
			j := strings.IndexAny(s[i:], " \t\"")
			if j < 0 {
				j = len(s) - i
			}
			out = append(out, s[i:i+j])
			i += j
		}
	}
	return out, nil
}
