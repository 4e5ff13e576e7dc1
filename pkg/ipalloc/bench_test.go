package ipalloc

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkAllocateRelease: one Allocate and one Release, in-process, in a /16 already holding
// n reservations (the hostlocal package has the exec'ed comparison with the reference).
func BenchmarkAllocateRelease(b *testing.B) {
	for _, n := range []int{0, 1000, 60000} {
		b.Run(fmt.Sprintf("existing=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			s := New(dir, "net", Options{})
			rs, _ := NewRangeSet("b", []RangeSpec{{Subnet: "10.128.0.0/16"}})
			os.MkdirAll(s.Dir(), 0o755)
			ip := mustAddr("10.128.0.2")
			for i := 0; i < n; i++ {
				os.WriteFile(filepath.Join(s.Dir(), ip.String()), []byte("pod-"+strconv.Itoa(i)+"\r\neth0"), 0o600)
				ip = ip.Next()
			}
			if _, err := s.Release(ctx, "warm", "eth0"); err != nil { // builds the index
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cid := "c" + strconv.Itoa(i)
				if _, err := s.Allocate(ctx, Request{ContainerID: cid, IfName: "eth0", Sets: []RangeSet{rs}}); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Release(ctx, cid, "eth0"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
