package hostlocal_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func TestAddResults(t *testing.T) {
	e := setup(t)
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("# comment\nnameserver 10.0.0.53\nnameserver fd00::53\ndomain example.com\nsearch a.example b.example\noptions ndots:2 rotate\n; other\n"), 0o644)
	for _, tc := range []struct {
		name, ipam string
		want       string // the result without dns
	}{
		{"ipv4", `{"ranges":[[{"subnet":"10.70.0.0/24"}]]}`,
			`{"cniVersion":"1.0.0","ips":[{"address":"10.70.0.2/24","gateway":"10.70.0.1"}]}`},
		{"ipv6", `{"ranges":[[{"subnet":"fd00:70::/64","gateway":"fd00:70::fe"}]],"routes":[{"dst":"::/0"}]}`,
			`{"cniVersion":"1.0.0","ips":[{"address":"fd00:70::1/64","gateway":"fd00:70::fe"}],"routes":[{"dst":"::/0"}]}`},
		{"dual-stack", `{"ranges":[[{"subnet":"10.71.0.0/16","rangeStart":"10.71.3.0","rangeEnd":"10.71.3.9"}],[{"subnet":"fd00:71::/120"}]],"routes":[{"dst":"0.0.0.0/0","gw":"10.71.0.254"},{"dst":"::/0"}]}`,
			`{"cniVersion":"1.0.0","ips":[{"address":"10.71.3.0/16","gateway":"10.71.0.1"},{"address":"fd00:71::2/120","gateway":"fd00:71::1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.71.0.254"},{"dst":"::/0"}]}`},
		{"legacy", `{"subnet":"10.72.0.0/24","gateway":"10.72.0.254"}`,
			`{"cniVersion":"1.0.0","ips":[{"address":"10.72.0.1/24","gateway":"10.72.0.254"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := e.run(t, e.ours, "ADD", "c-"+tc.name, e.conf(t, "1.0.0", tc.ipam, nil)).MustSucceed(t)
			var got map[string]any
			json.Unmarshal(o.Stdout, &got)
			delete(got, "dns")
			gb, _ := json.Marshal(got)
			var want any
			json.Unmarshal([]byte(tc.want), &want)
			wb, _ := json.Marshal(want)
			if string(gb) != string(wb) {
				t.Fatalf("result\n got %s\nwant %s", gb, wb)
			}
		})
	}
	ipam := fmt.Sprintf(`{"ranges":[[{"subnet":"10.73.0.0/24"}]],"resolvConf":%q}`, resolv)
	r := e.run(t, e.ours, "ADD", "c-dns", e.conf(t, "1.0.0", ipam, nil)).MustSucceed(t).Result(t, "1.0.0")
	if got := fmt.Sprintf("%v|%s|%v|%v", r.DNS.Nameservers, r.DNS.Domain, r.DNS.Search, r.DNS.Options); got != "[10.0.0.53 fd00::53]|example.com|[a.example b.example]|[ndots:2 rotate]" {
		t.Fatalf("dns from resolvConf = %s", got)
	}
}

func TestRequestedIPs(t *testing.T) {
	e := setup(t)
	dual := `{"ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"fd00:70::/64"}]]}`
	conf := e.conf(t, "1.0.0", dual, nil)
	for _, tc := range []struct {
		name, args string
		extra      map[string]any
		want       []string
	}{
		{"cni-args-one", "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.70.0.50", nil, []string{"10.70.0.50/24", "fd00:70::2/64"}},
		{"cni-args-list", "IP=10.70.0.51,fd00:70::51", nil, []string{"10.70.0.51/24", "fd00:70::51/64"}},
		{"args-cni-ips", "", map[string]any{"args": map[string]any{"cni": map[string]any{"ips": []string{"fd00:70::52"}}}}, []string{"10.70.0.52/24", "fd00:70::52/64"}},
		{"runtime-config-ips", "", map[string]any{"runtimeConfig": map[string]any{"ips": []string{"10.70.0.60/24", "fd00:70::60/64"}}}, []string{"10.70.0.60/24", "fd00:70::60/64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := e.call(e.ours, "ADD", tc.name, e.conf(t, "1.0.0", dual, tc.extra))
			c.Args = tc.args
			if got := ips(t, testenv.Run(t, c).MustSucceed(t)); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// Taken: a clear error and nothing reserved (the IPv4 address it would have got included).
	before := e.reservations(t)
	c := e.call(e.ours, "ADD", "wants-taken", conf)
	c.Args = "IP=fd00:70::51"
	testenv.Run(t, c).MustFail(t, 999).ErrContains(t, "fd00:70::51", "not available", "range set 1")
	if after := e.reservations(t); len(after) != len(before) {
		t.Fatalf("failed ADD changed the reservations: %d -> %d", len(before), len(after))
	}
	e.checkIndex(t)
}

func TestIPRangesCapabilityIsPrepended(t *testing.T) {
	e := setup(t)
	extra := map[string]any{"runtimeConfig": map[string]any{"ipRanges": [][]map[string]string{{{"subnet": "10.90.0.0/24", "rangeStart": "10.90.0.100"}}}}}
	conf := e.conf(t, "1.0.0", `{"ranges":[[{"subnet":"10.70.0.0/24"}]]}`, extra)
	if got := e.add(t, e.ours, "a", conf); !slices.Equal(got, []string{"10.90.0.100/24", "10.70.0.2/24"}) {
		t.Fatalf("got %v, want the runtime range set first", got)
	}
	b, _ := os.ReadFile(filepath.Join(e.netDir(), "last_reserved_ip.0"))
	if string(b) != "10.90.0.100" {
		t.Fatalf("last_reserved_ip.0 = %q: the runtime set is set 0", b)
	}
}

func TestRoundRobinAndExhaustionThroughTheBinary(t *testing.T) {
	e := setup(t)
	conf := e.conf(t, "1.0.0", `{"ranges":[[{"subnet":"10.70.0.0/29"}],[{"subnet":"fd00:70::/64"}]]}`, nil)
	for i := 2; i <= 6; i++ {
		if got := e.add(t, e.ours, fmt.Sprintf("c%d", i), conf); got[0] != fmt.Sprintf("10.70.0.%d/29", i) {
			t.Fatalf("c%d got %v", i, got)
		}
	}
	before := e.reservations(t)
	o := e.run(t, e.ours, "ADD", "c7", conf).MustFail(t, 999)
	o.ErrContains(t, "no free address in range set 0", "10.70.0.0/29")
	if !strings.Contains(string(o.Stderr), "full") {
		t.Errorf("no log line on stderr for the full range set: %q", o.Stderr)
	}
	if after := e.reservations(t); len(after) != len(before) {
		t.Fatalf("exhausted ADD reserved something (its IPv6 address must be rolled back)")
	}
	// A full range set is an ADD error, not a STATUS failure.
	e.run(t, e.ours, "STATUS", "", e.conf(t, "1.1.0", `{"ranges":[[{"subnet":"10.70.0.0/29"}]]}`, nil)).MustSucceed(t)
	e.run(t, e.ours, "DEL", "c3", conf).MustSucceed(t)
	e.run(t, e.ours, "DEL", "c5", conf).MustSucceed(t)
	// last is .6: wraps to the lowest free one, .3, then .5.
	if got := e.add(t, e.ours, "c8", conf); got[0] != "10.70.0.3/29" {
		t.Fatalf("after wrap got %v", got)
	}
	if got := e.add(t, e.ours, "c9", conf); got[0] != "10.70.0.5/29" {
		t.Fatalf("then got %v", got)
	}
	e.checkIndex(t)
}

func TestDelCheckGC(t *testing.T) {
	e := setup(t)
	conf := e.conf(t, "1.1.0", `{"ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"fd00:70::/64"}]]}`, nil)
	addA := e.run(t, e.ours, "ADD", "a", conf).MustSucceed(t)
	e.run(t, e.ours, "ADD", "b", conf).MustSucceed(t)
	e.run(t, e.ours, "ADD", "c", conf).MustSucceed(t)
	withA := withPrev(t, conf, addA.Stdout)
	e.run(t, e.ours, "CHECK", "a", withA).MustSucceed(t)
	e.run(t, e.ours, "CHECK", "a", conf).MustSucceed(t) // no prevResult: any reservation will do
	e.run(t, e.ours, "CHECK", "zz", conf).MustFail(t, 999).ErrContains(t, "zz")
	// prevResult of a, checked for b: a's addresses are not b's.
	e.run(t, e.ours, "CHECK", "b", withA).MustFail(t, 999).ErrContains(t, "10.70.0.2", "not reserved")
	// Someone else took a's IPv6 address.
	os.WriteFile(filepath.Join(e.netDir(), "fd00:70::2"), []byte("other\r\neth0"), 0o600)
	e.run(t, e.ours, "CHECK", "a", withA).MustFail(t, 999).ErrContains(t, "fd00:70::2")

	// DEL: releases everything of the attachment, twice is fine, no netns is fine.
	e.run(t, e.ours, "DEL", "b", conf).MustSucceed(t)
	if got := e.heldBy(t, "b"); len(got) != 0 {
		t.Fatalf("DEL b left %v", got)
	}
	e.run(t, e.ours, "DEL", "b", conf).MustSucceed(t)
	c := e.call(e.ours, "DEL", "b", conf)
	c.Netns = ""
	testenv.Run(t, c).MustSucceed(t)
	// DEL works from the name and dataDir alone: a range changed since ADD does not block it.
	changed := e.conf(t, "1.1.0", `{"ranges":[[{"subnet":"10.70.0.0/40"}]]}`, nil)
	e.run(t, e.ours, "DEL", "c", changed).MustSucceed(t)
	if got := e.heldBy(t, "c"); len(got) != 0 {
		t.Fatalf("DEL c left %v", got)
	}

	// GC keeps valid attachments, drops the rest (the foreign "other" reservation included).
	e.run(t, e.ours, "ADD", "d", conf).MustSucceed(t)
	gc := func(valid ...string) {
		var list []map[string]string
		for _, v := range valid {
			list = append(list, map[string]string{"containerID": v, "ifname": "eth0"})
		}
		m := map[string]any{}
		json.Unmarshal(conf, &m)
		m["cni.dev/valid-attachments"] = list
		b, _ := json.Marshal(m)
		e.run(t, e.ours, "GC", "", b).MustSucceed(t)
	}
	gc("a", "d")
	if got := e.heldBy(t, "a"); len(got) != 1 {
		t.Fatalf("GC left a with %v", got)
	}
	if got := e.heldBy(t, "d"); len(got) != 2 {
		t.Fatalf("GC left d with %v", got)
	}
	if got := e.heldBy(t, "other"); len(got) != 0 {
		t.Fatalf("GC kept %v of an attachment not in the list", got)
	}
	e.checkIndex(t)
	gc()
	if got := e.reservations(t); len(got) != 0 {
		t.Fatalf("GC with an empty list kept %v", got)
	}
	e.checkIndex(t)
}

func TestStatus(t *testing.T) {
	e := setup(t)
	ok := e.conf(t, "1.1.0", `{"ranges":[[{"subnet":"10.70.0.0/24"}]]}`, nil)
	e.run(t, e.ours, "STATUS", "", ok).MustSucceed(t)
	// Ranges that only come with runtimeConfig at ADD time (the ipRanges capability).
	capOnly := e.conf(t, "1.1.0", `{}`, map[string]any{"capabilities": map[string]bool{"ipRanges": true}})
	e.run(t, e.ours, "STATUS", "", capOnly).MustSucceed(t)
	e.run(t, e.ours, "STATUS", "", e.conf(t, "1.1.0", `{}`, nil)).MustFail(t, 50).ErrContains(t, "ipam.ranges")

	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, nil, 0o600)
	for _, dir := range []string{file, filepath.Join(file, "below"), "/proc/cnis-not-a-dir"} {
		bad := e.conf(t, "1.1.0", fmt.Sprintf(`{"dataDir":%q,"ranges":[[{"subnet":"10.70.0.0/24"}]]}`, dir), nil)
		e.run(t, e.ours, "STATUS", "", bad).MustFail(t, 50).ErrContains(t, "data dir", dir)
	}
	// A read-only file system: a private mount namespace, so nothing outside the test sees it.
	ro := t.TempDir()
	conf := e.conf(t, "1.1.0", fmt.Sprintf(`{"dataDir":%q,"ranges":[[{"subnet":"10.70.0.0/24"}]]}`, ro), nil)
	script := fmt.Sprintf("mount --make-rprivate / && mount -o bind,ro %s %s && exec %s", ro, ro, e.ours)
	c := e.call(writeScript(t, fmt.Sprintf("#!/bin/sh\nexec unshare -m sh -c %q\n", script)), "STATUS", "", conf)
	c.Path = filepath.Dir(e.ours)
	o := testenv.Run(t, c).MustFail(t, 50)
	o.ErrContains(t, "data dir", "read-only")
	t.Logf("read-only data dir: %s", o.Err.Msg)
}

func writeScript(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "run.sh")
	if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestFileModesThroughTheBinary(t *testing.T) {
	e := setup(t)
	e.add(t, e.ours, "a", e.conf(t, "1.0.0", `{"ranges":[[{"subnet":"10.70.0.0/24"}]]}`, nil))
	for name, mode := range map[string]os.FileMode{"": 0o755 | os.ModeDir, "10.70.0.2": 0o600, "last_reserved_ip.0": 0o600, "lock": 0o750} {
		st, err := os.Stat(filepath.Join(e.netDir(), name))
		if err != nil || st.Mode() != mode {
			t.Errorf("%q: mode %v (%v), want %v", name, st.Mode(), err, mode)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(e.netDir(), "10.70.0.2")); string(b) != "a\r\neth0" {
		t.Errorf("reservation content %q", b)
	}
}
