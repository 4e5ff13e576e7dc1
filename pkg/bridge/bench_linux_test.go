package bridge_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
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
				name           string
				bin            string
				node           *testenv.Node
				conf           []byte
				add, del       []time.Duration // wall time
				addCPU, delCPU []time.Duration // user+sys of the plugin and what it ran
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
						cid := fmt.Sprintf("b%d-%d", n, i)
						wall, cpu := runTimed(b, im.node, im.bin, "ADD", cid, pod.Path, ours+":"+ref, im.conf)
						im.add, im.addCPU = append(im.add, wall), append(im.addCPU, cpu)
						wall, cpu = runTimed(b, im.node, im.bin, "DEL", cid, pod.Path, ours+":"+ref, im.conf)
						im.del, im.delCPU = append(im.del, wall), append(im.delCPU, cpu)
						pod.Delete(b)
					}
				}
			}
			b.StopTimer()
			for _, im := range impls {
				b.ReportMetric(median(im.add), im.name+"-add-p50-ms")
				b.ReportMetric(median(im.del), im.name+"-del-p50-ms")
				b.ReportMetric(median(im.addCPU), im.name+"-add-cpu-p50-ms")
				b.ReportMetric(median(im.delCPU), im.name+"-del-cpu-p50-ms")
			}
			b.Logf("%s: ADD p50 ours %.1f ms, reference %.1f ms (%.1fx); DEL p50 ours %.1f ms, reference %.1f ms (%.1fx); %d pods each",
				cfg.name, median(impls[0].add), median(impls[1].add), median(impls[1].add)/median(impls[0].add),
				median(impls[0].del), median(impls[1].del), median(impls[1].del)/median(impls[0].del), len(impls[0].add))
			b.Logf("%s: CPU (user+sys, plugin and children) p50: ADD ours %.1f ms, reference %.1f ms; DEL ours %.1f ms, reference %.1f ms",
				cfg.name, median(impls[0].addCPU), median(impls[1].addCPU), median(impls[0].delCPU), median(impls[1].delCPU))
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

// runTimed runs one plugin verb in the node netns and returns its wall time and the CPU time
// (user+sys) of the plugin and every program it ran and waited for.
func runTimed(b *testing.B, node *testenv.Node, bin, verb, cid, netns, path string, conf []byte) (wall, cpu time.Duration) {
	b.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + cid,
		"CNI_NETNS=" + netns, "CNI_IFNAME=eth0", "CNI_PATH=" + path}
	cmd.Stdin = bytes.NewReader(conf)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := node.Do(func() error {
		t0 := time.Now()
		err := cmd.Run()
		wall = time.Since(t0)
		return err
	})
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", filepath.Base(bin), verb, err, out.String())
	}
	return wall, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}
