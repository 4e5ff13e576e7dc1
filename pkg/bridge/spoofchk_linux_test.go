package bridge_test

import (
	"regexp"
	"strings"
	"testing"
)

// nftBridge is the node's bridge-family nat table with the pod-specific parts (host veth name,
// container MAC, rule handles) replaced by placeholders.
func nftBridge(t *testing.T, e *env, veth, mac string) string {
	t.Helper()
	out := e.node.MustExec(t, "nft", "list", "table", "bridge", "nat")
	out = strings.ReplaceAll(out, veth, "<veth>")
	out = strings.ReplaceAll(out, mac, "<mac>")
	return regexp.MustCompile(`# handle \d+`).ReplaceAllString(out, "")
}

// The spoof-check ruleset is the reference's, and each implementation's DEL removes the other's.
func TestMacSpoofCheckMatchesReference(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"macspoofchk": true})
	p := e.node.NewPod(t)

	rr := e.ref().add(p, "c1", conf)
	want := nftBridge(t, e, rr.Interfaces[1].Name, rr.Interfaces[2].Mac)
	e.call("DEL", p, "c1", "eth0", conf).MustSucceed(t) // ours removes the reference's
	if out := e.node.MustExec(t, "nft", "list", "table", "bridge", "nat"); strings.Contains(out, "cni-br-iface") {
		t.Fatalf("our DEL left the reference's spoof check:\n%s", out)
	}

	ro := e.add(p, "c1", conf)
	got := nftBridge(t, e, ro.Interfaces[1].Name, ro.Interfaces[2].Mac)
	if got != want {
		t.Fatalf("nft ruleset differs from the reference's:\nours:\n%s\nreference:\n%s", got, want)
	}
	if !strings.Contains(got, `iifname "<veth>" jump cni-br-iface-c1-eth0 comment "macspoofchk-c1-eth0"`) {
		t.Fatalf("unexpected ruleset:\n%s", got)
	}
	e.ref().call("DEL", p, "c1", "eth0", conf).MustSucceed(t) // the reference removes ours
	if out := e.node.MustExec(t, "nft", "list", "table", "bridge", "nat"); strings.Contains(out, "cni-br-iface") {
		t.Fatalf("the reference's DEL left our spoof check:\n%s", out)
	}
}

// Frames from a forged source MAC are dropped; the real MAC passes.
func TestMacSpoofCheckDropsForgedMAC(t *testing.T) {
	e := newEnv(t)
	conf := e.conf(map[string]any{"macspoofchk": true})
	p1, p2 := e.node.NewPod(t), e.node.NewPod(t)
	r1, r2 := e.add(p1, "c1", conf), e.add(p2, "c2", conf)
	ping(t, p1, ipOf(r2, true))
	p1.MustExec(t, "ip", "link", "set", "eth0", "address", "02:00:00:00:66:66")
	p1.MustExec(t, "ip", "neigh", "flush", "all")
	noPing(t, p1, ipOf(r2, true))
	p1.MustExec(t, "ip", "link", "set", "eth0", "address", r1.Interfaces[2].Mac)
	ping(t, p1, ipOf(r2, true))
}
