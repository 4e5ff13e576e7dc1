package conflist

import (
	"encoding/json"
	"strings"
	"testing"
)

// Whatever a --pod-cidr flag or a Node's spec.podCIDRs holds: either a clear error, or a config
// that is valid JSON (TestRenderedConfigLoadsInLibcni loads it in libcni) and holds exactly the parsed CIDRs.
func FuzzParsePodCIDRs(f *testing.F) {
	for _, s := range []string{"10.244.1.0/24", "10.244.1.0/24,fd00::/64", "fd00:1:2:3::/64", " 10.0.0.0/8 ",
		"10.1.0.5/24", "::ffff:10.0.0.0/104", "10.0.0.0/31", "banana", "", ",", "10.0.0.0/24,10.1.0.0/24", "fe80::%eth0/64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePodCIDRs([]string{s})
		if err != nil {
			if !strings.Contains(err.Error(), "pod CIDR") {
				t.Fatalf("error does not name the pod CIDR: %v", err)
			}
			return
		}
		b, err := Render(NetParams{PodCIDRs: p})
		if len(p) == 0 {
			if err != ErrNoPodCIDR {
				t.Fatalf("no CIDR: %v", err)
			}
			return
		}
		if err != nil {
			t.Fatalf("parsed %v but Render failed: %v", p, err)
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("not JSON: %v", err)
		}
		pl, _ := v["plugins"].([]any)
		if v["cniVersion"] != "1.0.0" || len(pl) != 2 {
			t.Fatalf("not our config list: %s", b)
		}
		for _, c := range p {
			if !strings.Contains(string(b), `"subnet": "`+c.String()+`"`) {
				t.Fatalf("%s missing from\n%s", c, b)
			}
		}
	})
}
