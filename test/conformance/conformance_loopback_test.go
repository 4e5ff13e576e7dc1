package conformance

import (
	"fmt"
	"testing"
)

func init() {
	plugins = append(plugins, pluginCase{
		name:   "loopback",
		ifName: "lo",
		config: func(_ *testing.T, _ *env, v string) []byte {
			return []byte(fmt.Sprintf(`{"cniVersion":%q,"name":"conf-lo","type":"loopback"}`, v))
		},
		differs: map[string]string{
			// Reference v1.9.1 loopback builds a 1.0.0 result, labels it with the config's
			// version and prints it unconverted: 0.3.x/0.4.0 results lack ips[].version and
			// 0.1.0/0.2.0 results carry interfaces. Ours converts down as the spec asks.
			"add-result-per-version": "reference loopback does not convert its result down to old versions",
		},
	})
}
