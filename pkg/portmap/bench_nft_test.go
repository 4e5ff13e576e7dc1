package portmap_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/netfilter"
	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// BenchmarkPortmapNFT is BenchmarkPortmap with backend nftables: one pod's ADD and DEL (IPv4,
// 8080/tcp and 5353/udp) on a node with 0 and 500 pods mapped, ours against the reference
// v1.9.1's nftables backend (which runs the nft program) in the same run. It reports wall and
// CPU medians, and the programs each verb executes (counted with strace when installed; -1
// otherwise).
func BenchmarkPortmapNFT(b *testing.B) {
	const samples = 15
	impls := []struct{ name, dir string }{{"ours", testenv.PluginDir(b)}, {"reference", testenv.RefPluginDir(b, testenv.RefVersion)}}
	for _, existing := range []int{0, 500} {
		for _, im := range impls {
			b.Run(fmt.Sprintf("%s/existing=%d", im.name, existing), func(b *testing.B) {
				node := testenv.NewNode(b)
				populateNFT(b, node, existing)
				maps := `[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"}]`
				conf := pmConf("benchnet", nftBackend, maps, prevResult("10.66.200.5/16"))
				var adds, dels, addCPU, delCPU []time.Duration
				for i := 0; i < samples; i++ {
					cid := fmt.Sprintf("bench-%d", i)
					w, c := timed(b, pmCall(im.dir, node, "ADD", cid, conf))
					adds, addCPU = append(adds, w), append(addCPU, c)
					w, c = timed(b, pmCall(im.dir, node, "DEL", cid, conf))
					dels, delCPU = append(dels, w), append(delCPU, c)
				}
				addExecs := execCount(b, pmCall(im.dir, node, "ADD", "bench-count", conf))
				checkExecs := execCount(b, pmCall(im.dir, node, "CHECK", "bench-count", conf))
				delExecs := execCount(b, pmCall(im.dir, node, "DEL", "bench-count", conf))
				b.ReportMetric(ms(median(adds)), "add-p50-ms")
				b.ReportMetric(ms(median(dels)), "del-p50-ms")
				b.ReportMetric(ms(median(addCPU)), "add-cpu-p50-ms")
				b.ReportMetric(ms(median(delCPU)), "del-cpu-p50-ms")
				b.ReportMetric(float64(addExecs), "add-execs")
				b.ReportMetric(float64(delExecs), "del-execs")
				b.Logf("nftables, %s, %d existing pods: ADD p50 %.1f ms (CPU %.1f ms), DEL p50 %.1f ms (CPU %.1f ms), programs per ADD %d, CHECK %d, DEL %d",
					im.name, existing, ms(median(adds)), ms(median(addCPU)), ms(median(dels)), ms(median(delCPU)), addExecs, checkExecs, delExecs)
			})
		}
	}
}

// populateNFT maps n pods (IPv4, two hostPorts each) with the engine's nftables backend.
func populateNFT(b *testing.B, node *testenv.Node, n int) {
	err := node.Do(func() error {
		for i := 0; i < n; i++ {
			ip := netip.AddrFrom4([4]byte{10, 66, byte(i / 250), byte(i%250 + 2)})
			p := netfilter.PortMap{
				Backend: netfilter.BackendNFTables, Network: "benchnet", ContainerID: fmt.Sprintf("existing-%d", i), SNAT: true,
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

// execCount runs the plugin under strace and counts the programs it executed (the plugin's
// own exec excluded); -1 without strace.
func execCount(b *testing.B, c testenv.Call) int {
	b.Helper()
	st, err := exec.LookPath("strace")
	if err != nil {
		testenv.Run(b, c).MustSucceed(b)
		return -1
	}
	log := filepath.Join(b.TempDir(), "strace.log")
	cmd := exec.Command(st, "-f", "-qq", "-e", "trace=execve", "-o", log, c.Bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CNI_COMMAND=" + c.Command, "CNI_CONTAINERID=" + c.ContainerID,
		"CNI_NETNS=" + c.Netns, "CNI_IFNAME=" + c.IfName, "CNI_PATH=" + filepath.Dir(c.Bin)}
	cmd.Stdin = bytes.NewReader(c.Config)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := c.In.Do(cmd.Run); err != nil {
		b.Fatalf("%s %s under strace: %v\n%s", c.Bin, c.Command, err, out.String())
	}
	data, err := os.ReadFile(log)
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		// "execve(...) = 0", or with -f "<... execve resumed>) = 0"
		if strings.Contains(l, "execve") && strings.HasSuffix(strings.TrimSpace(l), "= 0") {
			n++
		}
	}
	return n - 1
}
