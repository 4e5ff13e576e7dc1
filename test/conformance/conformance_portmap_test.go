package conformance

import (
	"fmt"
	"testing"
)

// portmapPrev is a prevResult of the given version for a container eth0 at 10.99.0.5/24.
func portmapPrev(v, sandbox string) string {
	switch v {
	case "0.1.0", "0.2.0":
		return fmt.Sprintf(`{"cniVersion":%q,"ip4":{"ip":"10.99.0.5/24","gateway":"10.99.0.1"}}`, v)
	case "0.3.0", "0.3.1", "0.4.0":
		return fmt.Sprintf(`{"cniVersion":%q,"interfaces":[{"name":"eth0","sandbox":%q}],"ips":[{"version":"4","address":"10.99.0.5/24","interface":0}]}`, v, sandbox)
	default:
		return fmt.Sprintf(`{"cniVersion":%q,"interfaces":[{"name":"eth0","sandbox":%q}],"ips":[{"address":"10.99.0.5/24","interface":0}]}`, v, sandbox)
	}
}

func init() {
	plugins = append(plugins, pluginCase{
		name:   "portmap",
		ifName: "eth0",
		config: func(_ *testing.T, e *env, v string) []byte {
			return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"conf-pm","type":"portmap","capabilities":{"portMappings":true},
				"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"}]},
				"prevResult":%s}`, v, portmapPrev(v, e.Pod.Path)))
		},
	})
}
