package netfilter

import (
	"reflect"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	// Values the reference v1.9.1 wrote for the same inputs (iptables-save of its portmap and bridge).
	if got := DNATChain("mynet", "cid1"); got != "CNI-DN-a631aa8e1549a3b129110" {
		t.Errorf("DNATChain = %s", got)
	}
	for _, c := range []string{MasqChain("n", "c"), DNATChain("n", "c"), oldSNATChain("n", "c")} {
		if len(c) != 28 || !strings.HasPrefix(c, "CNI-") {
			t.Errorf("chain %q: want 28 characters starting CNI-", c)
		}
	}
	if got := MasqComment("net", `a"b`); got != `name: "net" id: "a\"b"` {
		t.Errorf("MasqComment = %s", got)
	}
	long := DNATComment(strings.Repeat("n", 300), "c")
	if len(long) != 256 || !strings.HasSuffix(long, "...") {
		t.Errorf("long DNAT comment: %d characters", len(long))
	}
	if n, id, ok := parseMasqComment(MasqComment("my-net", "ctr.1")); !ok || n != "my-net" || id != "ctr.1" {
		t.Errorf("parseMasqComment = %q %q %v", n, id, ok)
	}
	if n, id, ok := parseDNATComment(DNATComment("my-net", "ctr.1")); !ok || n != "my-net" || id != "ctr.1" {
		t.Errorf("parseDNATComment = %q %q %v", n, id, ok)
	}
	if _, _, ok := parseDNATComment(long); ok {
		t.Errorf("a cut comment must not parse")
	}
}

func TestQuoteAndTokens(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain_word-1", "plain_word-1"},
		{"two words", `"two words"`},
		{`name: "n" id: "c"`, `"name: \"n\" id: \"c\""`},
		{`it's\x`, `"it\'s\\x"`},
		{"", `""`},
	} {
		if got := quote(tc.in); got != tc.want {
			t.Errorf("quote(%q) = %s, want %s", tc.in, got, tc.want)
		}
		if got := tokens("-m comment --comment " + quote(tc.in) + " -j X"); !reflect.DeepEqual(got, []string{"-m", "comment", "--comment", tc.in, "-j", "X"}) {
			t.Errorf("tokens round trip of %q: %q", tc.in, got)
		}
	}
	r := parseRule(`-p tcp -m comment --comment "dnat name: \"n\" id: \"c\"" -m multiport --dports 80 -j CNI-DN-x`)
	if r.comment != `dnat name: "n" id: "c"` || r.target != "CNI-DN-x" {
		t.Errorf("parseRule = %+v", r)
	}
}

func TestParseSave(t *testing.T) {
	st := parseSave(`# Generated
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [3:4]
:CNI-X - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-X
-A CNI-X -j RETURN
COMMIT
`)
	if !st.has("CNI-X") || !st.has("PREROUTING") || st.has("DROPPED") || st.chains["INPUT"] {
		t.Errorf("chains = %v", st.chains)
	}
	if !st.hasRule("PREROUTING", "-m addrtype --dst-type LOCAL -j CNI-X") || len(st.rules["CNI-X"]) != 1 {
		t.Errorf("rules = %v", st.rules)
	}
}
