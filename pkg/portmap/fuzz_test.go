package portmap

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParse: any stdin gives a validated model or a CNI error of code 2, 6 or 7; nothing that
// reaches the iptables-restore text can hold a line break.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","type":"portmap","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"10.0.0.1"}]},"prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.1.2.3/24","interface":0},{"address":"fd00::3/64","interface":0}]}}`,
		`{"cniVersion":"0.3.1","name":"n","type":"portmap","snat":false,"masqAll":true,"markMasqBit":31,"conditionsV4":["-s","10.0.0.0/8"],"conditionsV6":["!","-s","fd00::/8"]}`,
		`{"cniVersion":"1.1.0","name":"n","type":"portmap","externalSetMarkChain":"KUBE-MARK-MASQ","backend":"iptables"}`,
		`{"cniVersion":"1.0.0","name":"n","type":"portmap","backend":"nftables"}`,
		`{"cniVersion":"0.2.0","name":"n","type":"portmap","prevResult":{"cniVersion":"0.2.0","ip4":{"ip":"10.1.2.3/24"}}}`,
		`{"name":"x\n","conditionsV4":["-s 1\n"]}`,
		`{"runtimeConfig":{"portMappings":[{"hostPort":70000}]}}`,
		`[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "cid", "eth0")
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || (te.Code != 2 && te.Code != 6 && te.Code != 7) {
				t.Fatalf("error %v (%T) is not a CNI error of code 2, 6 or 7", err, err)
			}
			return
		}
		m := p.Model
		if m.MarkMasqBit < 0 || m.MarkMasqBit > 31 || len(m.IPs) > 2 {
			t.Fatalf("model out of range: %+v", m)
		}
		for _, pm := range m.Mappings {
			if pm.HostPort < 1 || pm.HostPort > 65535 || pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
				t.Fatalf("port out of range: %+v", pm)
			}
			switch strings.ToLower(pm.Protocol) {
			case "tcp", "udp", "sctp":
			default:
				t.Fatalf("protocol %q accepted", pm.Protocol)
			}
		}
		for _, s := range append(append([]string{m.ExternalSetMarkChain, m.Network}, m.ConditionsV4...), m.ConditionsV6...) {
			if strings.ContainsAny(s, "\n\r") {
				t.Fatalf("line break reaches the restore text: %q", s)
			}
		}
	})
}
