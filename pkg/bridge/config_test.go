package bridge

import (
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name    string
		conf    string
		args    string
		code    uint // 0: success
		errHas  string
		addCode uint // validateAdd
		addErr  string
		check   func(t *testing.T, n *NetConf)
	}{
		{name: "defaults", conf: `{"cniVersion":"1.0.0","name":"n","type":"bridge"}`, check: func(t *testing.T, n *NetConf) {
			if n.BrName != "cni0" || n.IsGW || n.MTU != 0 || n.MAC != nil {
				t.Fatalf("defaults: %+v", n)
			}
		}},
		{name: "default-gw-implies-gw", conf: `{"name":"n","isDefaultGateway":true}`, check: func(t *testing.T, n *NetConf) {
			if !n.IsGW {
				t.Fatal("isDefaultGateway without isGateway")
			}
		}},
		{name: "every-key", conf: `{"name":"n","bridge":"br1","isGateway":true,"isDefaultGateway":true,"forceAddress":true,
			"ipMasq":true,"ipMasqBackend":"iptables","mtu":1400,"hairpinMode":true,"promiscMode":false,"vlan":5,
			"vlanTrunk":[{"id":7},{"minID":9,"maxID":10}],"preserveDefaultVlan":true,"macspoofchk":true,"enabledad":true,
			"disableContainerInterface":false,"portIsolation":true,"args":{"cni":{"mac":"02:00:00:00:00:02"}},
			"runtimeConfig":{"mac":"02:00:00:00:00:03"},"ipam":{"type":"host-local"},"unknownKey":1}`,
			args: "IgnoreUnknown=1;MAC=02:00:00:00:00:01;K8S_POD_NAME=x",
			check: func(t *testing.T, n *NetConf) {
				if n.BrName != "br1" || !n.ForceAddress || !n.IPMasq || n.masqBackend() != "iptables" || n.MTU != 1400 || !n.HairpinMode ||
					n.Vlan != 5 || !n.PreserveDefaultVlan || !n.MacSpoofChk || !n.EnableDad || !n.PortIsolation || !n.vlanFiltering() {
					t.Fatalf("keys: %+v", n)
				}
				if !reflect.DeepEqual(n.Vlans, []int{7, 9, 10}) {
					t.Fatalf("vlans %v", n.Vlans)
				}
				if n.MAC.String() != "02:00:00:00:00:03" {
					t.Fatalf("runtimeConfig.mac must win, got %s", n.MAC)
				}
			}},
		{name: "mac-precedence-args-over-env", conf: `{"name":"n","args":{"cni":{"mac":"02:00:00:00:00:02"}}}`, args: "MAC=02:00:00:00:00:01",
			check: func(t *testing.T, n *NetConf) {
				if n.MAC.String() != "02:00:00:00:00:02" {
					t.Fatalf("args.cni.mac must win over CNI_ARGS, got %s", n.MAC)
				}
			}},
		{name: "mac-from-env", conf: `{"name":"n"}`, args: "MAC=02:00:00:00:00:01", check: func(t *testing.T, n *NetConf) {
			if n.MAC.String() != "02:00:00:00:00:01" {
				t.Fatalf("CNI_ARGS MAC: %s", n.MAC)
			}
		}},
		{name: "not-json", conf: `{"name":`, code: types.ErrDecodingFailure},
		{name: "wrong-type", conf: `{"name":"n","vlan":"5"}`, code: types.ErrDecodingFailure, errHas: "vlan"},
		{name: "vlan-high", conf: `{"name":"n","vlan":4095}`, code: types.ErrInvalidNetworkConfig, errHas: "invalid vlan"},
		{name: "vlan-negative", conf: `{"name":"n","vlan":-1}`, code: types.ErrInvalidNetworkConfig, errHas: "vlan"},
		{name: "trunk-id", conf: `{"name":"n","vlanTrunk":[{"id":0}]}`, code: types.ErrInvalidNetworkConfig, errHas: "vlanTrunk"},
		{name: "trunk-order", conf: `{"name":"n","vlanTrunk":[{"minID":20,"maxID":10}]}`, code: types.ErrInvalidNetworkConfig, errHas: "greater"},
		{name: "trunk-half", conf: `{"name":"n","vlanTrunk":[{"maxID":10}]}`, code: types.ErrInvalidNetworkConfig, errHas: "minID"},
		{name: "trunk-max", conf: `{"name":"n","vlanTrunk":[{"minID":1,"maxID":4095}]}`, code: types.ErrInvalidNetworkConfig, errHas: "maxID"},
		{name: "cni-args-unknown", conf: `{"name":"n"}`, args: "FOO=1", code: types.ErrInvalidEnvironmentVariables, errHas: "CNI_ARGS"},
		{name: "cni-args-garbled", conf: `{"name":"n"}`, args: "novalue", code: types.ErrInvalidEnvironmentVariables, errHas: "CNI_ARGS"},
		// ADD-only checks: DEL of such a config still works.
		{name: "hairpin-promisc", conf: `{"name":"n","hairpinMode":true,"promiscMode":true}`, addCode: types.ErrInvalidNetworkConfig, addErr: "hairpinMode"},
		{name: "disable-with-ipam", conf: `{"name":"n","disableContainerInterface":true,"ipam":{"type":"host-local"}}`, addCode: types.ErrInvalidNetworkConfig, addErr: "disableContainerInterface"},
		{name: "bridge-empty", conf: `{"name":"n","bridge":""}`, addCode: types.ErrInvalidNetworkConfig, addErr: "bridge"},
		{name: "bridge-slash", conf: `{"name":"n","bridge":"a/b"}`, addCode: types.ErrInvalidNetworkConfig, addErr: "bridge"},
		{name: "mac-multicast", conf: `{"name":"n","runtimeConfig":{"mac":"01:00:00:00:00:01"}}`, addCode: types.ErrInvalidNetworkConfig, addErr: "runtimeConfig.mac"},
		{name: "mac-zero", conf: `{"name":"n","args":{"cni":{"mac":"00:00:00:00:00:00"}}}`, addCode: types.ErrInvalidNetworkConfig, addErr: "args.cni.mac"},
		{name: "mac-long", conf: `{"name":"n"}`, args: "MAC=00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", addCode: types.ErrInvalidNetworkConfig, addErr: "CNI_ARGS MAC"},
		{name: "backend-unknown", conf: `{"name":"n","ipMasq":true,"ipMasqBackend":"pf"}`, addCode: types.ErrUnsupportedField, addErr: "ipMasqBackend"},
		{name: "backend-ignored-without-masq", conf: `{"name":"n","ipMasqBackend":"pf"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := Parse([]byte(c.conf), c.args)
			if c.code != 0 {
				wantCode(t, err, c.code, c.errHas)
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			err = n.validateAdd()
			if c.addCode != 0 {
				wantCode(t, err, c.addCode, c.addErr)
				return
			}
			if err != nil {
				t.Fatalf("validateAdd: %v", err)
			}
			if c.check != nil {
				c.check(t, n)
			}
		})
	}
}

func wantCode(t *testing.T, err error, code uint, has string) {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) || te.Code != code {
		t.Fatalf("error %v, want CNI code %d", err, code)
	}
	if !strings.Contains(te.Msg, has) {
		t.Fatalf("error %q does not name %q", te.Msg, has)
	}
}

func mustCIDR(s string) net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return *n
}

func TestApplyIPAM(t *testing.T) {
	gw6 := net.ParseIP("fd00::fe")
	ipam := func() *current.Result {
		return &current.Result{
			IPs: []*current.IPConfig{
				{Address: mustCIDR("10.1.2.7/24")},
				{Address: mustCIDR("fd00::7/64"), Gateway: gw6},
			},
			Routes: []*types.Route{{Dst: mustCIDR("10.9.0.0/16")}},
			DNS:    types.DNS{Nameservers: []string{"10.1.2.53"}},
		}
	}
	n := &NetConf{IsGW: true, IsDefaultGW: true}
	res := &current.Result{}
	gws := applyIPAM(n, res, ipam())
	if len(gws) != 2 || gws[0].String() != "10.1.2.1/24" || gws[1].String() != "fd00::fe/64" {
		t.Fatalf("gateways %v", gws)
	}
	for _, ip := range res.IPs {
		if *ip.Interface != 2 {
			t.Fatalf("ip %v not on the container interface", ip)
		}
	}
	var routes []string
	for _, r := range res.Routes {
		routes = append(routes, r.Dst.String()+">"+r.GW.String())
	}
	if strings.Join(routes, " ") != "10.9.0.0/16><nil> 0.0.0.0/0>10.1.2.1 ::/0>fd00::fe" {
		t.Fatalf("routes %v", routes)
	}
	pc := podConfig(n, res)
	if len(pc.Addrs) != 2 || pc.Routes[0].GW.String() != "10.1.2.1" {
		t.Fatalf("pod config %+v", pc)
	}
	// An IPAM default route is kept and not doubled; DNS from the config wins.
	withDefault := ipam()
	withDefault.Routes = []*types.Route{{Dst: mustCIDR("0.0.0.0/0"), GW: net.ParseIP("10.1.2.254")}}
	n.DNS = types.DNS{Nameservers: []string{"1.1.1.1"}}
	res = &current.Result{}
	applyIPAM(n, res, withDefault)
	if len(res.Routes) != 2 || res.Routes[0].GW.String() != "10.1.2.254" || res.DNS.Nameservers[0] != "1.1.1.1" {
		t.Fatalf("routes %v dns %v", res.Routes, res.DNS)
	}
	// Without isGateway: no gateway invented, no bridge address.
	res = &current.Result{}
	if gws := applyIPAM(&NetConf{}, res, ipam()); len(gws) != 0 || res.IPs[0].Gateway != nil {
		t.Fatalf("gateways without isGateway: %v %v", gws, res.IPs[0].Gateway)
	}
}

func TestFirstHostAndPrefix(t *testing.T) {
	for in, want := range map[string]string{"10.1.2.7/24": "10.1.2.1", "10.1.255.7/16": "10.1.0.1", "fd00::7/64": "fd00::1", "10.0.0.9/31": "10.0.0.9"} {
		if got := firstHost(mustCIDR(in)).String(); got != want {
			t.Errorf("firstHost(%s) = %s, want %s", in, got, want)
		}
	}
	a := mustCIDR("10.1.2.7/24")
	a.IP = a.IP.To16()
	if p, ok := toPrefix(a); !ok || p.String() != "10.1.2.7/24" {
		t.Fatalf("toPrefix = %v %v", p, ok)
	}
}
