package netfilter

import (
	"fmt"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// BenchmarkEngineNFT is BenchmarkEngine with the nftables backend: a pod's port mappings and
// masquerade set up and torn down (one netlink dump and batch each) on nodes with 0 and 500
// pods, interleaved sample by sample. Medians of wall time and of the calling thread's CPU.
func BenchmarkEngineNFT(b *testing.B) {
	const samples = 31
	nodes := map[int]*testenv.Node{}
	for _, n := range []int{0, 500} {
		node := testenv.NewNode(b)
		err := node.Do(func() error {
			for i := 0; i < n; i++ {
				p := benchPod(i, fmt.Sprintf("existing-%d", i))
				p.Backend = BackendNFTables
				if err := SetupPortMap(p); err != nil {
					return err
				}
				if err := SetupMasq(Masq{Backend: BackendNFTables, Network: p.Network, ContainerID: p.ContainerID, IfName: "eth0", IPs: p.IPs}); err != nil {
					return err
				}
			}
			p := benchPod(600, "warm")
			p.Backend = BackendNFTables
			return SetupPortMap(p)
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
			p.Backend = BackendNFTables
			m := Masq{Backend: BackendNFTables, Network: p.Network, ContainerID: p.ContainerID, IfName: "eth0", IPs: p.IPs}
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
		b.Logf("nftables %s: p50 %.2f ms with 0 pods, %.2f ms with 500 pods", verb, float64(m0.Microseconds())/1000, float64(m5.Microseconds())/1000)
	}
}
