package conflist

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// The exact bytes: DESIGN.md fixes cniVersion/cniVersions, the issue the plugins and their keys.
func TestRenderExact(t *testing.T) {
	cases := []struct {
		name string
		p    NetParams
		want string
	}{
		{"ipv4, mtu", NetParams{PodCIDRs: prefixes("10.244.1.0/24"), MTU: 1450}, `{
  "cniVersion": "1.0.0",
  "cniVersions": [
    "1.0.0",
    "1.1.0"
  ],
  "name": "cni-suite",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "mtu": 1450,
      "ipam": {
        "type": "host-local",
        "ranges": [
          [
            {
              "subnet": "10.244.1.0/24"
            }
          ]
        ],
        "routes": [
          {
            "dst": "0.0.0.0/0"
          }
        ],
        "dataDir": "/run/cni-suite/networks"
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      },
      "snat": true
    }
  ]
}
`},
		{"dual-stack, no mtu, own names", NetParams{Name: "k8s-pods", Bridge: "br-pods", DataDir: "/run/ipam",
			PodCIDRs: prefixes("fd00:10:244:7::/64", "10.244.7.0/24")}, `{
  "cniVersion": "1.0.0",
  "cniVersions": [
    "1.0.0",
    "1.1.0"
  ],
  "name": "k8s-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "br-pods",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [
          [
            {
              "subnet": "fd00:10:244:7::/64"
            }
          ],
          [
            {
              "subnet": "10.244.7.0/24"
            }
          ]
        ],
        "routes": [
          {
            "dst": "0.0.0.0/0"
          },
          {
            "dst": "::/0"
          }
        ],
        "dataDir": "/run/ipam"
      }
    },
    {
      "type": "portmap",
      "capabilities": {
        "portMappings": true
      },
      "snat": true
    }
  ]
}
`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Render(c.p)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Errorf("Render:\n%s\nwant:\n%s", got, c.want)
			}
		})
	}
}

func TestRenderAndParseErrors(t *testing.T) {
	cases := []struct {
		name string
		p    NetParams
		want string
	}{
		{"no cidr", NetParams{}, "no pod CIDR"},
		{"two ipv4", NetParams{PodCIDRs: prefixes("10.1.0.0/24", "10.2.0.0/24")}, "more than one IPv4"},
		{"two ipv6", NetParams{PodCIDRs: prefixes("fd00:1::/64", "fd00:2::/64")}, "more than one IPv6"},
		{"host bits", NetParams{PodCIDRs: prefixes("10.1.0.5/24")}, "host bits set (did you mean 10.1.0.0/24?)"},
		{"too small v4", NetParams{PodCIDRs: prefixes("10.1.0.0/31")}, "too small"},
		{"too small v6", NetParams{PodCIDRs: prefixes("fd00::/127")}, "too small"},
		{"mapped", NetParams{PodCIDRs: prefixes("::ffff:10.1.0.0/120")}, "IPv4-mapped"},
		{"bridge name", NetParams{PodCIDRs: prefixes("10.1.0.0/24"), Bridge: "a-very-long-bridge-name"}, "bridge name"},
		{"bridge slash", NetParams{PodCIDRs: prefixes("10.1.0.0/24"), Bridge: "br/0"}, "bridge name"},
		{"data dir", NetParams{PodCIDRs: prefixes("10.1.0.0/24"), DataDir: "run/x"}, "absolute"},
		{"mtu low", NetParams{PodCIDRs: prefixes("10.1.0.0/24"), MTU: 100}, "mtu 100"},
		{"mtu high", NetParams{PodCIDRs: prefixes("10.1.0.0/24"), MTU: 70000}, "mtu 70000"},
		{"name", NetParams{PodCIDRs: prefixes("10.1.0.0/24"), Name: "../evil"}, "network name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Render(c.p)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	if _, err := Render(NetParams{}); !errors.Is(err, ErrNoPodCIDR) {
		t.Errorf("no CIDR: %v, want ErrNoPodCIDR", err)
	}
	for _, bad := range []string{"10.1.0.0", "10.1.0.0/33", "banana", "10.1.0.0/24,,nope"} {
		if _, err := ParsePodCIDRs([]string{bad}); err == nil || !strings.Contains(err.Error(), "pod CIDR") {
			t.Errorf("ParsePodCIDRs(%q) = %v, want an error naming the pod CIDR", bad, err)
		}
	}
	got, err := ParsePodCIDRs([]string{" 10.1.0.0/24 , fd00::/64", ""})
	if err != nil || len(got) != 2 || got[1].String() != "fd00::/64" {
		t.Errorf("comma-separated: %v, %v", got, err)
	}
}
