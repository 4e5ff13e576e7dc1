package netfilter

import (
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

func benchPod(i int, cid string) PortMap {
	ip := netip.AddrFrom4([4]byte{10, 66, byte(i / 250), byte(i%250 + 2)})
	return PortMap{
		Network: "benchnet", ContainerID: cid, SNAT: true, MarkMasqBit: 13,
		IPs: []netip.Prefix{netip.PrefixFrom(ip, 16)},
		Mappings: []PortMapping{
			{HostPort: 10000 + i, ContainerPort: 80, Protocol: "tcp"},
			{HostPort: 20000 + i, ContainerPort: 53, Protocol: "udp"},
		},
	}
}

// BenchmarkEngine times the engine alone (one iptables-restore each) for a pod's port mappings
// and a pod's masquerade, set up and torn down on a node with 0 and with 500 pods, the two
// nodes interleaved sample by sample so that machine load hits both alike. Medians.
func BenchmarkEngine(b *testing.B) {
	const samples = 31
	nodes := map[int]*testenv.Node{}
	for _, n := range []int{0, 500} {
		node := testenv.NewNode(b)
		err := node.Do(func() error {
			for i := 0; i < n; i++ {
				if err := SetupPortMap(benchPod(i, fmt.Sprintf("existing-%d", i))); err != nil {
					return err
				}
				p := benchPod(i, fmt.Sprintf("existing-%d", i))
				if err := SetupMasq(Masq{Network: p.Network, ContainerID: p.ContainerID, IPs: p.IPs}); err != nil {
					return err
				}
			}
			// The shared chains exist on both nodes.
			return SetupPortMap(benchPod(600, "warm"))
		})
		if err != nil {
			b.Fatal(err)
		}
		nodes[n] = node
	}
	type key struct {
		n    int
		verb string
	}
	times := map[key][]time.Duration{}
	for s := 0; s < samples; s++ {
		for _, n := range []int{0, 500} {
			p := benchPod(700, fmt.Sprintf("bench-%d", s))
			m := Masq{Network: p.Network, ContainerID: p.ContainerID, IPs: p.IPs}
			for _, step := range []struct {
				verb string
				fn   func() error
			}{
				{"portmap-add", func() error { return SetupPortMap(p) }},
				{"portmap-del", func() error { return TeardownPortMap(p) }},
				{"masq-add", func() error { return SetupMasq(m) }},
				{"masq-del", func() error { return TeardownMasq(m) }},
			} {
				t0 := time.Now()
				if err := nodes[n].Do(step.fn); err != nil {
					b.Fatal(err)
				}
				times[key{n, step.verb}] = append(times[key{n, step.verb}], time.Since(t0))
			}
		}
	}
	for _, verb := range []string{"portmap-add", "portmap-del", "masq-add", "masq-del"} {
		m0, m5 := med(times[key{0, verb}]), med(times[key{500, verb}])
		b.ReportMetric(float64(m0.Microseconds())/1000, verb+"-0-ms")
		b.ReportMetric(float64(m5.Microseconds())/1000, verb+"-500-ms")
		b.Logf("%s: p50 %.1f ms with 0 pods, %.1f ms with 500 pods", verb, float64(m0.Microseconds())/1000, float64(m5.Microseconds())/1000)
	}
}

func med(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
