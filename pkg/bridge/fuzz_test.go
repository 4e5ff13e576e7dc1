package bridge

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParse: any input gives a config or a CNI error with a code (never a panic, never a
// plain error), for Parse and validateAdd alike.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/16"}]]}}`,
		`{"name":"n","vlan":5,"vlanTrunk":[{"minID":1,"maxID":3},{"id":9}],"runtimeConfig":{"mac":"02:00:00:00:00:01"}}`,
		`{"name":"n","hairpinMode":true,"promiscMode":true}`,
		`{"name":"n","args":{"cni":{"mac":"zz"}},"prevResult":{"cniVersion":"1.0.0","ips":[]}}`,
		`{"vlan":4095}`, `[]`, `null`, `{"mtu":"x"}`,
	} {
		f.Add([]byte(s), "IgnoreUnknown=1;MAC=02:00:00:00:00:09")
	}
	f.Fuzz(func(t *testing.T, conf []byte, args string) {
		n, err := Parse(conf, args)
		if err == nil {
			err = n.validateAdd()
			if err == nil {
				err = n.parsePrevResult()
			}
		}
		if err == nil {
			if n.Vlan < 0 || n.Vlan > 4094 {
				t.Fatalf("accepted vlan %d", n.Vlan)
			}
			if n.MAC != nil && (len(n.MAC) != 6 || n.MAC[0]&1 != 0) {
				t.Fatalf("accepted MAC %s", n.MAC)
			}
			return
		}
		var te *types.Error
		if !errors.As(err, &te) || te.Code == 0 {
			t.Fatalf("not a CNI error with a code: %#v", err)
		}
	})
}
