package hostlocal_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/hostlocal"
	"github.com/cni-suite/cni-suite/pkg/testenv"
)

const v4 = `[{"subnet":"10.70.0.0/24"}]`

type badCase struct {
	name    string
	conf    string // full config; DATADIR is replaced by the data dir
	args    string // CNI_ARGS
	code    uint
	mention []string
	status  bool // STATUS must fail (code 50) on it too
}

func ipamConf(ipam string) string {
	return `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","ipam":{"type":"host-local","dataDir":"DATADIR",` + ipam + `}}`
}

var badConfigs = []badCase{
	{"no-ipam", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge"}`, "", 7, []string{"ipam"}, true},
	{"no-ranges", ipamConf(`"routes":[]`), "", 7, []string{"ipam.ranges", "no IP ranges"}, true},
	{"empty-set", ipamConf(`"ranges":[[]]`), "", 7, []string{"ipam.ranges[0]", "empty"}, true},
	{"subnet-missing", ipamConf(`"ranges":[[{"rangeStart":"10.70.0.5"}]]`), "", 7, []string{"ipam.ranges[0][0].subnet", "missing"}, true},
	{"subnet-not-cidr", ipamConf(`"ranges":[[{"subnet":"10.70.0.0"}]]`), "", 7, []string{"ipam.ranges[0][0].subnet", "not a CIDR"}, true},
	{"subnet-garbage", ipamConf(`"ranges":[[{"subnet":"banana/24"}]]`), "", 7, []string{"ipam.ranges[0][0].subnet"}, true},
	{"subnet-host-bits", ipamConf(`"ranges":[[{"subnet":"10.70.0.9/24"}]]`), "", 7, []string{"ipam.ranges[0][0].subnet", "host bits"}, true},
	{"subnet-too-small", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/31"}]]`), "", 7, []string{"ipam.ranges[0][0].subnet", "too small"}, true},
	{"v6-too-small", ipamConf(`"ranges":[[{"subnet":"fd00::/128"}]]`), "", 7, []string{"ipam.ranges[0][0].subnet", "too small"}, true},
	{"start-outside", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","rangeStart":"10.71.0.5"}]]`), "", 7, []string{"ipam.ranges[0][0].rangeStart", "not in subnet"}, true},
	{"end-outside", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","rangeEnd":"10.71.0.5"}]]`), "", 7, []string{"ipam.ranges[0][0].rangeEnd", "not in subnet"}, true},
	{"start-after-end", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","rangeStart":"10.70.0.9","rangeEnd":"10.70.0.5"}]]`), "", 7, []string{"ipam.ranges[0][0].rangeEnd"}, true},
	{"start-on-broadcast", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","rangeStart":"10.70.0.255"}]]`), "", 7, []string{"ipam.ranges[0][0].rangeStart"}, true},
	{"start-not-ip", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","rangeStart":"10.70.0"}]]`), "", 7, []string{"ipam.ranges[0][0].rangeStart", "not an IP"}, true},
	{"gateway-not-ip", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","gateway":"gw"}]]`), "", 7, []string{"ipam.ranges[0][0].gateway"}, true},
	{"v6-range-in-v4-set", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24"},{"subnet":"fd00::/64"}]]`), "", 7, []string{"ipam.ranges[0][1].subnet", "families"}, true},
	{"overlap-in-set", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/16"},{"subnet":"10.70.3.0/24"}]]`), "", 7, []string{"ipam.ranges[0]", "overlap"}, true},
	{"overlap-across-sets", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"10.70.0.128/25"}]]`), "", 7, []string{"ipam.ranges[1]", "overlaps with range set 0"}, true},
	{"legacy-bad-subnet", ipamConf(`"subnet":"10.70.0.0/33"`), "", 7, []string{"ipam.subnet"}, true},
	{"legacy-start-outside", ipamConf(`"subnet":"10.70.0.0/24","rangeStart":"10.9.9.9"`), "", 7, []string{"ipam.rangeStart"}, true},
	{"legacy-overlaps-ranges", ipamConf(`"subnet":"10.70.0.0/24","ranges":[` + v4 + `]`), "", 7, []string{"ipam.ranges[0]", "overlaps"}, true},
	{"runtime-ipranges-bad", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","runtimeConfig":{"ipRanges":[[{"subnet":"10.80.0.0/40"}]]},"ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[` + v4 + `]}}`, "", 7, []string{"runtimeConfig.ipRanges[0][0].subnet"}, false},
	{"route-dst-bad", ipamConf(`"ranges":[` + v4 + `],"routes":[{"dst":"0.0.0.0"}]`), "", 7, []string{"ipam.routes[0].dst", "not a CIDR"}, true},
	{"route-dst-missing", ipamConf(`"ranges":[` + v4 + `],"routes":[{"gw":"10.70.0.1"}]`), "", 7, []string{"ipam.routes[0].dst", "missing"}, true},
	{"route-gw-bad", ipamConf(`"ranges":[` + v4 + `],"routes":[{"dst":"0.0.0.0/0","gw":"x"}]`), "", 7, []string{"ipam.routes[0].gw"}, true},
	{"resolvconf-missing", ipamConf(`"ranges":[` + v4 + `],"resolvConf":"/nonexistent/cnis-resolv.conf"`), "", 7, []string{"ipam.resolvConf", "no such file"}, true},
	{"two-v4-sets-0.2.0", strings.Replace(ipamConf(`"ranges":[`+v4+`,[{"subnet":"10.71.0.0/24"}]]`), "1.0.0", "0.2.0", 1), "", 7, []string{"ipam.ranges", "more than 1 address per family"}, true},
	{"requested-outside", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","runtimeConfig":{"ips":["10.99.0.5/24"]},"ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[` + v4 + `]}}`, "", 7, []string{"runtimeConfig.ips[0]", "10.99.0.5", "no range set"}, false},
	{"requested-not-ip", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","args":{"cni":{"ips":["nope"]}},"ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[` + v4 + `]}}`, "", 7, []string{"args.cni.ips[0]"}, false},
	{"requested-gateway", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","args":{"cni":{"ips":["10.70.0.1"]}},"ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[` + v4 + `]}}`, "", 7, []string{"args.cni.ips[0]", "gateway"}, false},
	{"requested-two-in-one-set", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","runtimeConfig":{"ips":["10.70.0.5","10.70.0.6"]},"ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[` + v4 + `]}}`, "", 7, []string{"runtimeConfig.ips[1]", "one address per range set"}, false},
	{"cni-args-ip-bad", ipamConf(`"ranges":[` + v4 + `]`), "IgnoreUnknown=1;IP=10.70.0.300", 4, []string{"CNI_ARGS IP"}, false},
	{"cni-args-ip-outside", ipamConf(`"ranges":[` + v4 + `]`), "IP=10.70.0.5,10.99.0.5", 4, []string{"CNI_ARGS IP", "10.99.0.5"}, false},
	{"cni-args-unknown", ipamConf(`"ranges":[` + v4 + `]`), "K8S_POD_NAME=x", 4, []string{"CNI_ARGS", "unknown args"}, false},
	{"cni-args-bad-pair", ipamConf(`"ranges":[` + v4 + `]`), "IgnoreUnknown=1;IP", 4, []string{"CNI_ARGS", "invalid pair"}, false},
	{"cni-args-bad-bool", ipamConf(`"ranges":[` + v4 + `]`), "IgnoreUnknown=maybe", 4, []string{"CNI_ARGS", "IgnoreUnknown"}, false},
	{"type-ranges", ipamConf(`"ranges":"10.70.0.0/24"`), "", 6, []string{"ranges"}, false},
	{"type-subnet", ipamConf(`"ranges":[[{"subnet":24}]]`), "", 6, []string{"subnet"}, false},
	{"type-ipam", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","ipam":"host-local"}`, "", 6, []string{"ipam"}, false},
	{"type-route", ipamConf(`"ranges":[` + v4 + `],"routes":[{"dst":5}]`), "", 6, []string{"ipam.routes[0]"}, false},
	{"type-ips", `{"cniVersion":"1.0.0","name":"hlnet","type":"bridge","runtimeConfig":{"ips":"10.70.0.5"},"ipam":{"type":"host-local","dataDir":"DATADIR","ranges":[` + v4 + `]}}`, "", 6, []string{"ips"}, false},
}

func expand(c badCase, dataDir string) []byte {
	return []byte(strings.ReplaceAll(c.conf, "DATADIR", dataDir))
}

func checkErr(t *testing.T, err error, code uint, mention []string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T), want a CNI error with code %d", err, err, code)
	}
	if te.Code != code {
		t.Errorf("code %d (%s), want %d", te.Code, te.Msg, code)
	}
	for _, m := range mention {
		if !strings.Contains(te.Msg, m) {
			t.Errorf("message %q does not mention %q", te.Msg, m)
		}
	}
}

// The parser alone (no root needed).
func TestLoadConfigRejects(t *testing.T) {
	for _, c := range badConfigs {
		if c.name == "resolvconf-missing" {
			continue // resolvConf is read by ADD, not the parser
		}
		t.Run(c.name, func(t *testing.T) {
			_, err := hostlocal.LoadConfig(expand(c, t.TempDir()), c.args)
			checkErr(t, err, c.code, c.mention)
		})
	}
}

// Every bad input through the binary: the right code, the field named, and nothing on disk.
func TestBadConfigChangesNothing(t *testing.T) {
	e := setup(t)
	for _, c := range badConfigs {
		t.Run(c.name, func(t *testing.T) {
			conf := expand(c, e.dataDir)
			cmds := []string{"ADD", "CHECK"}
			if c.name == "resolvconf-missing" || strings.Contains(c.name, "0.2.0") {
				cmds = cmds[:1] // CHECK does not read resolvConf; 0.2.0 has no CHECK
			}
			for _, cmd := range cmds {
				call := e.call(e.ours, cmd, "bad-1", conf)
				call.Args = c.args
				o := testenv.Run(t, call).MustFail(t, c.code)
				o.ErrContains(t, c.mention...)
			}
			if c.status {
				o := e.run(t, e.ours, "STATUS", "", []byte(strings.Replace(string(conf), `"cniVersion":"1.0.0"`, `"cniVersion":"1.1.0"`, 1)))
				if !strings.Contains(c.name, "0.2.0") {
					o.MustFail(t, 50).ErrContains(t, c.mention...)
				}
			}
			if es, _ := os.ReadDir(e.dataDir); len(es) != 0 {
				t.Fatalf("a rejected config left %v in the data dir", es)
			}
		})
	}
}

func TestLoadConfigAccepts(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, conf, args string
		sets             []string // String() of each set
		requested        []string
	}{
		{"legacy", ipamConf(`"subnet":"10.70.0.0/24","rangeStart":"10.70.0.10","rangeEnd":"10.70.0.20"`), "",
			[]string{"10.70.0.10-10.70.0.20"}, []string{""}},
		{"legacy-first-then-ranges", ipamConf(`"subnet":"10.70.0.0/24","ranges":[[{"subnet":"fd00::/120"}]]`), "",
			[]string{"10.70.0.1-10.70.0.254", "fd00::1-fd00::ff"}, []string{"", ""}},
		{"runtime-ipranges-prepended",
			`{"cniVersion":"1.0.0","name":"hlnet","runtimeConfig":{"ipRanges":[[{"subnet":"10.80.0.0/24"}]]},"ipam":{"dataDir":"DATADIR","ranges":[[{"subnet":"fd00::/120"}]]}}`,
			"", []string{"10.80.0.1-10.80.0.254", "fd00::1-fd00::ff"}, []string{"", ""}},
		{"gateway-outside-subnet-accepted", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","gateway":"192.168.0.1"}]]`), "",
			[]string{"10.70.0.1-10.70.0.254"}, []string{""}},
		{"empty-strings-are-unset", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24","gateway":"","rangeStart":"","rangeEnd":""}]]`), "",
			[]string{"10.70.0.1-10.70.0.254"}, []string{""}},
		{"cni-args-comma-list", ipamConf(`"ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"fd00::/64"}]]`),
			"IgnoreUnknown=1;K8S_POD_NAME=p;IP=fd00::7,10.70.0.7/24",
			[]string{"10.70.0.1-10.70.0.254", "fd00::1-fd00::ffff:ffff:ffff:ffff"}, []string{"10.70.0.7", "fd00::7"}},
		{"all-request-sources",
			`{"cniVersion":"1.0.0","name":"hlnet","args":{"cni":{"ips":["fd00::8"]}},"runtimeConfig":{"ips":["10.70.0.8/24","10.70.0.8"]},"ipam":{"dataDir":"DATADIR","ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"fd00::/64"}]]}}`,
			"", []string{"10.70.0.1-10.70.0.254", "fd00::1-fd00::ffff:ffff:ffff:ffff"}, []string{"10.70.0.8", "fd00::8"}},
		{"two-sets-per-family-0.3.0", strings.Replace(ipamConf(`"ranges":[`+v4+`,[{"subnet":"10.71.0.0/24"}]]`), "1.0.0", "0.3.0", 1), "",
			[]string{"10.70.0.1-10.70.0.254", "10.71.0.1-10.71.0.254"}, []string{"", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := hostlocal.LoadConfig([]byte(strings.ReplaceAll(tc.conf, "DATADIR", dir)), tc.args)
			if err != nil {
				t.Fatal(err)
			}
			var sets, req []string
			for i, s := range c.Sets {
				sets = append(sets, s.String())
				r := ""
				if c.Requested[i] != (netip.Addr{}) {
					r = c.Requested[i].String()
				}
				req = append(req, r)
			}
			if fmt.Sprint(sets) != fmt.Sprint(tc.sets) || fmt.Sprint(req) != fmt.Sprint(tc.requested) {
				t.Fatalf("sets %v requested %v, want %v %v", sets, req, tc.sets, tc.requested)
			}
			if c.DataDir != dir || c.Name != "hlnet" {
				t.Fatalf("dataDir %q name %q", c.DataDir, c.Name)
			}
		})
	}
	c, err := hostlocal.LoadConfig([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"subnet":"10.70.0.0/24"}}`), "")
	if err != nil || c.DataDir != "/var/lib/cni/networks" {
		t.Fatalf("default dataDir: %v %+v", err, c)
	}
}
