package portmap_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/netfilter"
	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// BenchmarkPortmap measures one pod's portmap ADD and DEL (the plugin binary run as a runtime
// runs it: IPv4, hostPorts 8080/tcp and 5353/udp) on a node with 0 and 500 pods already
// mapped, ours against the reference v1.9.1 in the same run (DEL with prevResult, as libcni
// sends it), and counts the iptables programs
// each verb runs. It reports medians of wall time and of CPU time (plugin and the programs it
// ran; steadier than wall time on a loaded machine); b.N is ignored (a fixed number of samples).
func BenchmarkPortmap(b *testing.B) {
	const samples = 15
	impls := []struct{ name, dir string }{{"ours", testenv.PluginDir(b)}, {"reference", testenv.RefPluginDir(b, testenv.RefVersion)}}
	for _, existing := range []int{0, 500} {
		for _, im := range impls {
			b.Run(fmt.Sprintf("%s/existing=%d", im.name, existing), func(b *testing.B) {
				node := testenv.NewNode(b)
				populate(b, node, existing)
				maps := `[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"}]`
				conf := pmConf("benchnet", "", maps, prevResult("10.66.200.5/16"))
				del := conf // runtimes pass the cached result on DEL too
				var adds, dels, addCPU, delCPU []time.Duration
				for i := 0; i < samples; i++ {
					cid := fmt.Sprintf("bench-%d", i)
					w, c := timed(b, pmCall(im.dir, node, "ADD", cid, conf))
					adds, addCPU = append(adds, w), append(addCPU, c)
					w, c = timed(b, pmCall(im.dir, node, "DEL", cid, del))
					dels, delCPU = append(dels, w), append(delCPU, c)
				}
				sh := newShim(b)
				c := pmCall(im.dir, node, "ADD", "bench-count", conf)
				c.Env = sh.env()
				testenv.Run(b, c).MustSucceed(b)
				addExecs := len(sh.runs())
				c = pmCall(im.dir, node, "DEL", "bench-count", del)
				c.Env = sh.env()
				testenv.Run(b, c).MustSucceed(b)
				delExecs := len(sh.runs())
				b.ReportMetric(ms(median(adds)), "add-p50-ms")
				b.ReportMetric(ms(median(dels)), "del-p50-ms")
				b.ReportMetric(ms(median(addCPU)), "add-cpu-p50-ms")
				b.ReportMetric(ms(median(delCPU)), "del-cpu-p50-ms")
				b.ReportMetric(float64(addExecs), "add-iptables-execs")
				b.ReportMetric(float64(delExecs), "del-iptables-execs")
				b.Logf("%s, %d existing pods: ADD p50 %.1f ms (CPU %.1f ms), DEL p50 %.1f ms (CPU %.1f ms), iptables programs per ADD %d, per DEL %d",
					im.name, existing, ms(median(adds)), ms(median(addCPU)), ms(median(dels)), ms(median(delCPU)), addExecs, delExecs)
			})
		}
	}
}

// timed runs the plugin in the node as a runtime does and returns its wall time and the CPU
// time (user and system) of the plugin and of the programs it ran, which the machine's load
// does not inflate as it does wall time.
func timed(b *testing.B, c testenv.Call) (wall, cpu time.Duration) {
	b.Helper()
	cmd := exec.Command(c.Bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + c.Command, "CNI_CONTAINERID=" + c.ContainerID,
		"CNI_NETNS=" + c.Netns, "CNI_IFNAME=" + c.IfName, "CNI_PATH=" + filepath.Dir(c.Bin)}
	cmd.Stdin = bytes.NewReader(c.Config)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := c.In.Do(cmd.Run); err != nil {
		b.Fatalf("%s %s: %v\n%s", c.Bin, c.Command, err, out.String())
	}
	wall = time.Since(t0)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
	}
	return wall, cpu
}

// populate maps n pods (IPv4, two hostPorts each) with the engine, in the reference's layout.
func populate(b *testing.B, node *testenv.Node, n int) {
	err := node.Do(func() error {
		for i := 0; i < n; i++ {
			ip := netip.AddrFrom4([4]byte{10, 66, byte(i / 250), byte(i%250 + 2)})
			p := netfilter.PortMap{
				Network: "benchnet", ContainerID: fmt.Sprintf("existing-%d", i), SNAT: true, MarkMasqBit: 13,
				IPs: []netip.Prefix{netip.PrefixFrom(ip, 16)},
				Mappings: []netfilter.PortMapping{
					{HostPort: 10000 + i, ContainerPort: 80, Protocol: "tcp"},
					{HostPort: 20000 + i, ContainerPort: 53, Protocol: "udp"},
				},
			}
			if err := netfilter.SetupPortMap(p); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
