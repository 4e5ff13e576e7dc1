package netfilter

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
)

// maxChainLen is the length of every per-container chain name, as the reference cuts it.
const maxChainLen = 28

// hashedName is prefix followed by the hex sha512 of toHash, cut to maxChainLen characters.
func hashedName(prefix, toHash string) string {
	sum := sha512.Sum512([]byte(toHash))
	return (prefix + hex.EncodeToString(sum[:]))[:maxChainLen]
}

// MasqChain is the iptables chain of a container's masquerade rules: CNI-<hash of network+id>.
func MasqChain(network, containerID string) string {
	return hashedName("CNI-", network+containerID)
}

// DNATChain is the iptables chain of a container's port mappings: CNI-DN-<hash>.
func DNATChain(network, containerID string) string {
	return hashedName("CNI-DN-", network+containerID)
}

// oldSNATChain is the per-container chain of portmap releases older than v0.7, still removed on DEL.
func oldSNATChain(network, containerID string) string {
	return hashedName("CNI-SN-", network+containerID)
}

// MasqComment is the comment on every masquerade rule: name: "<net>" id: "<cid>" (Go %q quoting).
func MasqComment(network, containerID string) string {
	return fmt.Sprintf("name: %q id: %q", network, containerID)
}

// DNATComment is the comment on a container's entry rules in CNI-HOSTPORT-DNAT, cut to
// iptables' 255 character limit as the reference does.
func DNATComment(network, containerID string) string {
	c := fmt.Sprintf(`dnat name: "%s" id: "%s"`, network, containerID)
	if len(c) > 255 {
		c = c[:253] + "..."
	}
	return c
}

var (
	masqCommentRE = regexp.MustCompile(`^name: ("(?:[^"\\]|\\.)*") id: ("(?:[^"\\]|\\.)*")$`)
	dnatCommentRE = regexp.MustCompile(`^dnat name: "(.*)" id: "([^"]*)"$`)
)

// parseMasqComment returns the network and container ID of a masquerade comment.
func parseMasqComment(c string) (network, containerID string, ok bool) {
	m := masqCommentRE.FindStringSubmatch(c)
	if m == nil {
		return "", "", false
	}
	n, err1 := strconv.Unquote(m[1])
	id, err2 := strconv.Unquote(m[2])
	return n, id, err1 == nil && err2 == nil
}

// parseDNATComment returns the network and container ID of a portmap entry rule comment.
func parseDNATComment(c string) (network, containerID string, ok bool) {
	m := dnatCommentRE.FindStringSubmatch(c)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// Family is an IP family; each has its own iptables program and table.
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func familyOf(a netip.Addr) Family {
	if a.Unmap().Is4() {
		return IPv4
	}
	return IPv6
}

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}
