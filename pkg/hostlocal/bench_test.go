package hostlocal_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"

	"github.com/cni-suite/cni-suite/pkg/hostlocal"
)

// BenchmarkAddDel: ADD then DEL of one container in a /16 already holding 0, 1,000 or 60,000
// reservations, ours against the reference v1.9.1, same run, both binaries executed the same
// way (a process started in the node netns, stdin config, wall time from start to exit), plus
// ours in-process. Reports per-op medians (µs) and reference/ours ratios.
// Rounds per size: CNI_SUITE_BENCH_ROUNDS (default 15). make bench runs it with -benchtime 1x.
func BenchmarkAddDel(b *testing.B) {
	for _, n := range []int{0, 1000, 60000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) { benchAddDel(b, n) })
	}
}

// populate writes n reservations in the reference's format (as n running pods would have left
// them), the addresses from 10.128.0.2 up, last_reserved_ip pointing at the last one.
func populate(b *testing.B, dataDir string, n int) {
	dir := filepath.Join(dataDir, netName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	ip := netip.MustParseAddr("10.128.0.2")
	last := ip
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, ip.String()), []byte("pod-"+strconv.Itoa(i)+"\r\neth0"), 0o600); err != nil {
			b.Fatal(err)
		}
		last, ip = ip, ip.Next()
	}
	if n > 0 {
		os.WriteFile(filepath.Join(dir, "last_reserved_ip.0"), []byte(last.String()), 0o600)
	}
}

func median(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds())
}

func benchAddDel(b *testing.B, n int) {
	rounds := 15
	if r, err := strconv.Atoi(os.Getenv("CNI_SUITE_BENCH_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	e := setup(b)
	type impl struct {
		name, bin, dataDir string
		add, del           []time.Duration
		conf               []byte
	}
	impls := []*impl{
		{name: "ours", bin: e.ours},
		{name: "ref", bin: filepath.Join(refDir(b), "host-local")},
	}
	for _, im := range impls {
		im.dataDir = filepath.Join(e.dataDir, im.name)
		populate(b, im.dataDir, n)
		im.conf = []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"bridge","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.128.0.0/16"}]]}}`, netName, im.dataDir))
	}
	execOp := func(im *impl, cmd, cid string) time.Duration {
		start := time.Now()
		p, err := e.start(im.bin, cmd, cid, im.conf)
		if err != nil {
			b.Fatal(err)
		}
		if cerr, err := p.wait(); err != nil || cerr != nil {
			b.Fatalf("%s %s %s: %v %v", im.name, cmd, cid, err, cerr)
		}
		return time.Since(start)
	}
	// The first operation of ours on a directory it has no index of builds the index.
	firstOurs := execOp(impls[0], "ADD", "warm")
	execOp(impls[0], "DEL", "warm")
	execOp(impls[1], "ADD", "warm")
	execOp(impls[1], "DEL", "warm")

	b.ResetTimer()
	for r := 0; r < rounds; r++ {
		order := impls
		if r%2 == 1 {
			order = []*impl{impls[1], impls[0]}
		}
		for _, im := range order {
			cid := fmt.Sprintf("bench-%d", r)
			im.add = append(im.add, execOp(im, "ADD", cid))
			im.del = append(im.del, execOp(im, "DEL", cid))
		}
	}
	b.StopTimer()

	// Ours in-process, on its own copy of the state.
	inDir := filepath.Join(e.dataDir, "inproc")
	populate(b, inDir, n)
	inConf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"type":"bridge","ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"10.128.0.0/16"}]]}}`, netName, inDir))
	hostlocal.Logf = func(string, ...any) {}
	var inAdd, inDel []time.Duration
	for r := -1; r < rounds; r++ { // round -1 builds the index
		args := &skel.CmdArgs{ContainerID: fmt.Sprintf("inproc-%d", r), IfName: "eth0", Netns: e.pod.Path, StdinData: inConf}
		start := time.Now()
		if _, err := hostlocal.Add(context.Background(), args); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if err := hostlocal.Del(context.Background(), args); err != nil {
			b.Fatal(err)
		}
		if r >= 0 {
			inAdd, inDel = append(inAdd, mid.Sub(start)), append(inDel, time.Since(mid))
		}
	}

	ours, ref := impls[0], impls[1]
	m := map[string]float64{
		"ours_add_us": median(ours.add), "ours_del_us": median(ours.del),
		"ref_add_us": median(ref.add), "ref_del_us": median(ref.del),
		"inproc_add_us": median(inAdd), "inproc_del_us": median(inDel),
	}
	for k, v := range m {
		b.ReportMetric(v, k)
	}
	b.ReportMetric(m["ref_add_us"]/m["ours_add_us"], "add_ratio")
	b.ReportMetric(m["ref_del_us"]/m["ours_del_us"], "del_ratio")
	b.Logf("existing=%d rounds=%d (median µs) ADD ours %.0f ref %.0f (x%.1f)  DEL ours %.0f ref %.0f (x%.1f)  in-process ADD %.0f DEL %.0f  ours' first op (index build) %v",
		n, rounds, m["ours_add_us"], m["ref_add_us"], m["ref_add_us"]/m["ours_add_us"],
		m["ours_del_us"], m["ref_del_us"], m["ref_del_us"]/m["ours_del_us"], m["inproc_add_us"], m["inproc_del_us"], firstOurs.Round(time.Millisecond))
}

func refDir(b *testing.B) string {
	return filepath.Dir(refBin(b, "v1.9.1"))
}
