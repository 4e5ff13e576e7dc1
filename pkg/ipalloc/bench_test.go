package ipalloc

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAllocateRelease: Allocate then Release of one attachment, in-process, in a /16
// already holding 0, 1,000 or 60,000 reservations; reports the median of each (µs) over
// max(b.N, 300) rounds, so that -benchtime 1x (make bench) still measures. The hostlocal
// package has the comparison with the reference binary.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, n := range []int{0, 1000, 60000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			s := New(b.TempDir(), "net", Options{})
			rs, _ := NewRangeSet("b", []RangeSpec{{Subnet: "10.128.0.0/16"}})
			os.MkdirAll(s.Dir(), 0o755)
			ip := mustAddr("10.128.0.2")
			for i := 0; i < n; i++ {
				os.WriteFile(filepath.Join(s.Dir(), ip.String()), []byte("pod-"+strconv.Itoa(i)+"\r\neth0"), 0o600)
				ip = ip.Next()
			}
			start := time.Now()
			if _, err := s.Release(ctx, "warm", "eth0"); err != nil { // builds the index
				b.Fatal(err)
			}
			build := time.Since(start)
			rounds := max(b.N, 300)
			var add, del []time.Duration
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 0; i < rounds; i++ {
				cid := "c" + strconv.Itoa(i)
				t0 := time.Now()
				if _, err := s.Allocate(ctx, Request{ContainerID: cid, IfName: "eth0", Sets: []RangeSet{rs}}); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := s.Release(ctx, cid, "eth0"); err != nil {
					b.Fatal(err)
				}
				add, del = append(add, t1.Sub(t0)), append(del, time.Since(t1))
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			med := func(d []time.Duration) float64 {
				slices.Sort(d)
				return float64(d[len(d)/2].Nanoseconds()) / 1e3
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(med(add), "allocate_us")
			b.ReportMetric(med(del), "release_us")
			b.ReportMetric(float64(build.Microseconds()), "index_build_us")
			// CPU time (user+system) per Allocate+Release: less sensitive to a busy machine.
			b.ReportMetric(float64(cpu.Microseconds())/float64(rounds), "cpu_us/pair")
		})
	}
}
