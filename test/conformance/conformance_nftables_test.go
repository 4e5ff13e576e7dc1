package conformance

import (
	"encoding/json"
	"fmt"
	"testing"
)

// The bridge (ipMasqBackend) and portmap (backend) again, with the nftables backend.
func init() {
	plugins = append(plugins,
		pluginCase{
			name: "bridge-nftables", bin: "bridge", ifName: "eth0",
			config: func(t *testing.T, e *env, v string) []byte {
				b, err := json.Marshal(map[string]any{
					"cniVersion": v, "name": "conf-br-nft", "type": "bridge", "bridge": "cni0",
					"isGateway": true, "ipMasq": true, "ipMasqBackend": "nftables",
					"ipam": map[string]any{"type": "host-local", "dataDir": e.Node.DataDir,
						"ranges": [][]map[string]string{{{"subnet": "10.33.0.0/24"}}, {{"subnet": "fd00:33::/64"}}}},
				})
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
		},
		pluginCase{
			name: "portmap-nftables", bin: "portmap", ifName: "eth0",
			config: func(_ *testing.T, e *env, v string) []byte {
				return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"conf-pm-nft","type":"portmap","backend":"nftables","capabilities":{"portMappings":true},
					"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"}]},
					"prevResult":%s}`, v, portmapPrev(v, e.Pod.Path)))
			},
		})
}
