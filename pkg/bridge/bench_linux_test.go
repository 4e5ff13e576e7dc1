package bridge_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// BenchmarkBridgeAddDel times bridge ADD and DEL as a runtime sees them (plugin exec, IPAM
// exec, netlink, rules) for ours and the reference v1.9.1, alternating pod by pod on two
// nodes with the same config (the reference's host-local serves both). It reports medians
// (ms) per implementation. CNI_SUITE_BENCH_PODS sets the pods per implementation (default 30).
func BenchmarkBridgeAddDel(b *testing.B) {
	pods := 30
	if s := os.Getenv("CNI_SUITE_BENCH_PODS"); s != "" {
		pods, _ = strconv.Atoi(s)
	}
	ours, ref := testenv.PluginDir(b), testenv.RefPluginDir(b, testenv.RefVersion)
	for _, cfg := range []struct {
		name string
		kv   map[string]any
	}{{"gateway", nil}, {"gateway+ipMasq", map[string]any{"ipMasq": true}}} {
		b.Run(cfg.name, func(b *testing.B) {
			type impl struct {
				name     string
				bin      string
				node     *testenv.Node
				conf     []byte
				add, del []time.Duration
			}
			impls := []*impl{{name: "ours", bin: filepath.Join(ours, "bridge")}, {name: "ref", bin: filepath.Join(ref, "bridge")}}
			for _, im := range impls {
				im.node = testenv.NewNode(b)
				m := map[string]any{"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
					"isGateway": true, "isDefaultGateway": true,
					"ipam": map[string]any{"type": "host-local", "dataDir": im.node.DataDir,
						"ranges": [][]map[string]string{{{"subnet": "10.44.0.0/16"}}}}}
				for k, v := range cfg.kv {
					m[k] = v
				}
				im.conf, _ = json.Marshal(m)
			}
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for i := 0; i < pods; i++ {
					for _, im := range impls {
						pod := im.node.NewPod(b)
						c := testenv.Call{Bin: im.bin, Command: "ADD", ContainerID: fmt.Sprintf("b%d-%d", n, i), IfName: "eth0",
							Netns: pod.Path, Path: ours + ":" + ref, Config: im.conf, In: im.node.NS}
						t0 := time.Now()
						testenv.Run(b, c).MustSucceed(b)
						im.add = append(im.add, time.Since(t0))
						c.Command = "DEL"
						t0 = time.Now()
						testenv.Run(b, c).MustSucceed(b)
						im.del = append(im.del, time.Since(t0))
						pod.Delete(b)
					}
				}
			}
			b.StopTimer()
			for _, im := range impls {
				b.ReportMetric(median(im.add), im.name+"-add-p50-ms")
				b.ReportMetric(median(im.del), im.name+"-del-p50-ms")
			}
			b.Logf("%s: ADD p50 ours %.1f ms, reference %.1f ms (%.1fx); DEL p50 ours %.1f ms, reference %.1f ms (%.1fx); %d pods each",
				cfg.name, median(impls[0].add), median(impls[1].add), median(impls[1].add)/median(impls[0].add),
				median(impls[0].del), median(impls[1].del), median(impls[1].del)/median(impls[0].del), len(impls[0].add))
		})
	}
}

func median(d []time.Duration) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return float64(s[len(s)/2]) / float64(time.Millisecond)
}
