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
// exec, netlink, rules), pod by pod in turn on one node per implementation, same config:
// "ours" (our bridge and host-local), "ref" (the reference v1.9.1 bridge and host-local) and
// "refbr" (the reference bridge with our host-local: the bridge alone compared). It reports
// wall-time medians and CPU-time medians (user+sys of the plugin and all it ran, less
// sensitive to a loaded machine), in ms. CNI_SUITE_BENCH_PODS sets the pods (default 30).
func BenchmarkBridgeAddDel(b *testing.B) {
	pods := 30
	if s := os.Getenv("CNI_SUITE_BENCH_PODS"); s != "" {
		pods, _ = strconv.Atoi(s)
	}
	ours, ref := testenv.PluginDir(b), testenv.RefPluginDir(b, testenv.RefVersion)
	for _, cfg := range []struct {
		name string
		kv   map[string]any
	}{{"gateway", nil}, {"gateway+ipMasq", map[string]any{"ipMasq": true}},
		{"gateway+ipMasq-nftables", map[string]any{"ipMasq": true, "ipMasqBackend": "nftables"}}} {
		b.Run(cfg.name, func(b *testing.B) {
			type impl struct {
				name           string
				bin            string
				node           *testenv.Node
				conf           []byte
				path           string          // CNI_PATH
				add, del       []time.Duration // wall time
				addCPU, delCPU []time.Duration // user+sys of the plugin and what it ran
			}
			impls := []*impl{
				{name: "ours", bin: filepath.Join(ours, "bridge"), path: ours},
				{name: "ref", bin: filepath.Join(ref, "bridge"), path: ref},
				{name: "refbr", bin: filepath.Join(ref, "bridge"), path: ours},
			}
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
						wall, cpu := runTimed(b, im.node, im.bin, "ADD", cid, pod.Path, im.path, im.conf)
						im.add, im.addCPU = append(im.add, wall), append(im.addCPU, cpu)
						wall, cpu = runTimed(b, im.node, im.bin, "DEL", cid, pod.Path, im.path, im.conf)
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
			for _, im := range impls[1:] {
				b.Logf("%s: ours vs %s: ADD p50 %.1f vs %.1f ms (%.1fx), DEL p50 %.1f vs %.1f ms (%.1fx); CPU ADD %.1f vs %.1f ms, DEL %.1f vs %.1f ms; %d pods",
					cfg.name, im.name, median(impls[0].add), median(im.add), median(im.add)/median(impls[0].add),
					median(impls[0].del), median(im.del), median(im.del)/median(impls[0].del),
					median(impls[0].addCPU), median(im.addCPU), median(impls[0].delCPU), median(im.delCPU), len(im.add))
			}
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
