// Package bench holds benchmarks across plugin binaries (a runtime's whole chain).
package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// BenchmarkChainNFT runs a runtime's chain, bridge (ipMasq, ipMasqBackend nftables, with
// host-local) then portmap (backend nftables, one hostPort), for 200 pods at concurrency 8,
// then DEL of every pod, ours and the reference v1.9.1 in the same run, each on its own node.
// It reports ADD and DEL throughput, per-pod latency medians, and the ADD latency of the last
// 10% of pods against the first 10%. CNI_SUITE_BENCH_PODS and CNI_SUITE_BENCH_CONC change
// the pods and the concurrency; b.N is ignored.
func BenchmarkChainNFT(b *testing.B) {
	pods, conc := envInt("CNI_SUITE_BENCH_PODS", 200), envInt("CNI_SUITE_BENCH_CONC", 8)
	for _, im := range []struct{ name, dir string }{
		{"ours", testenv.PluginDir(b)}, {"reference", testenv.RefPluginDir(b, testenv.RefVersion)},
	} {
		b.Run(im.name, func(b *testing.B) {
			node := testenv.NewNode(b)
			netns := make([]*testenv.NS, pods)
			for i := range netns {
				netns[i] = node.NewPod(b)
			}
			br, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "chain", "type": "bridge", "bridge": "cni0",
				"isGateway": true, "ipMasq": true, "ipMasqBackend": "nftables", "hairpinMode": true,
				"ipam": map[string]any{"type": "host-local", "dataDir": node.DataDir, "ranges": [][]map[string]string{{{"subnet": "10.88.0.0/16"}}}}})
			pm := func(i int, prev []byte) []byte {
				s := fmt.Sprintf(`{"cniVersion":"1.0.0","name":"chain","type":"portmap","backend":"nftables","capabilities":{"portMappings":true},
					"runtimeConfig":{"portMappings":[{"hostPort":%d,"containerPort":80,"protocol":"tcp"}]}`, 20000+i)
				if prev != nil {
					s += `,"prevResult":` + string(prev)
				}
				return []byte(s + "}")
			}
			run := func(bin, verb string, i int, conf []byte) ([]byte, error) {
				cmd := exec.Command(filepath.Join(im.dir, bin))
				cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + fmt.Sprintf("chain-%d", i),
					"CNI_NETNS=" + netns[i].Path, "CNI_IFNAME=eth0", "CNI_PATH=" + im.dir}
				cmd.Stdin = bytes.NewReader(conf)
				var out, errb bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &errb
				err := node.Do(cmd.Run)
				if err != nil {
					return nil, fmt.Errorf("%s %s pod %d: %v: %s%s", bin, verb, i, err, out.String(), errb.String())
				}
				return out.Bytes(), nil
			}
			prevs := make([][]byte, pods)
			add := func(i int) error {
				res, err := run("bridge", "ADD", i, br)
				if err != nil {
					return err
				}
				prevs[i] = res
				_, err = run("portmap", "ADD", i, pm(i, res))
				return err
			}
			del := func(i int) error {
				if _, err := run("portmap", "DEL", i, pm(i, prevs[i])); err != nil {
					return err
				}
				_, err := run("bridge", "DEL", i, br)
				return err
			}
			addLat, addWall, err := parallel(pods, conc, add)
			if err != nil {
				b.Fatal(err)
			}
			delLat, delWall, err := parallel(pods, conc, del)
			if err != nil {
				b.Fatal(err)
			}
			tenth := max(1, pods/10)
			first, last := median(addLat[:tenth]), median(addLat[pods-tenth:])
			b.ReportMetric(float64(pods)/addWall.Seconds(), "add/s")
			b.ReportMetric(float64(pods)/delWall.Seconds(), "del/s")
			b.ReportMetric(ms(median(addLat)), "add-p50-ms")
			b.ReportMetric(ms(median(delLat)), "del-p50-ms")
			b.ReportMetric(ms(last)/ms(first), "last/first-10%")
			b.Logf("%s, nftables, %d pods at concurrency %d: ADD %.1f pods/s (p50 %.1f ms), DEL %.1f pods/s (p50 %.1f ms), ADD p50 of the last 10%% %.1f ms vs first 10%% %.1f ms",
				im.name, pods, conc, float64(pods)/addWall.Seconds(), ms(median(addLat)), float64(pods)/delWall.Seconds(), ms(median(delLat)), ms(last), ms(first))
		})
	}
}

// parallel runs fn for 0..n-1 on conc workers, in order of i; it returns each call's latency
// (indexed by i), the total wall time and the first error.
func parallel(n, conc int, fn func(i int) error) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, n)
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	t0 := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				s := time.Now()
				err := fn(i)
				lat[i] = time.Since(s)
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return lat, time.Since(t0), first
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}
