package conformance

import (
	"fmt"
	"testing"
)

func init() {
	plugins = append(plugins, pluginCase{
		name:   "host-local",
		ifName: "eth0",
		// An IPAM plugin run directly, as a runtime's delegate would run it: one IPv4 and one
		// IPv6 range set (0.1.0/0.2.0 results allow one address per family), in the node's
		// throwaway data dir.
		config: func(_ *testing.T, e *env, v string) []byte {
			return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"conf-hl","type":"host-local",`+
				`"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.77.0.0/24"}],[{"subnet":"fd00:77::/64"}]],`+
				`"routes":[{"dst":"0.0.0.0/0"}]}}`, v, e.Node.DataDir))
		},
	})
}
