package netfilter

import (
	"strings"
	"testing"
)

// FuzzQuote: a comment quoted as iptables-save does reads back whole through the restore
// tokenizer, and a rule holding it parses back to it.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"plain", `name: "n" id: "c"`, `a\b'c"d`, "", " ", "\\", `dnat name: "x" id: "y"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsAny(s, "\n\r\x00") {
			return // refused before rendering (checkName)
		}
		got := tokens("-m comment --comment " + quote(s) + " -j CNI-X")
		if len(got) != 6 || got[3] != s || got[5] != "CNI-X" {
			t.Fatalf("quote(%q) = %s reads back as %q", s, quote(s), got)
		}
		if r := parseRule("-m comment --comment " + quote(s) + " -j CNI-X"); r.comment != s || r.target != "CNI-X" {
			t.Fatalf("parseRule: %+v", r)
		}
	})
}
