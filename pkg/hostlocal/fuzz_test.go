package hostlocal_test

import (
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/hostlocal"
	"github.com/cni-suite/cni-suite/pkg/ipalloc"
)

// FuzzLoadConfig: the parser never panics, answers bad input with a CNI error of code 4, 6 or
// 7, and what it accepts is consistent (ranges inside their subnets, sets of one family that do
// not overlap, every requested address allocatable in its own set). Seed corpus:
// testdata/fuzz/FuzzLoadConfig.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"n","ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}]]}}`), "")
	f.Add([]byte(`{"cniVersion":"0.2.0","name":"n","ipam":{"subnet":"fd00::/120","rangeStart":"fd00::5"}}`), "IP=fd00::9")
	f.Fuzz(func(t *testing.T, stdin []byte, args string) {
		c, err := hostlocal.LoadConfig(stdin, args)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || (te.Code != 4 && te.Code != 6 && te.Code != 7) || te.Msg == "" {
				t.Fatalf("error %v (%T) is not a CNI error of code 4, 6 or 7", err, err)
			}
			return
		}
		if len(c.Sets) == 0 || len(c.Requested) != len(c.Sets) || len(c.SetFields) != len(c.Sets) || c.DataDir == "" || c.Name == "" {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
		if i, j := ipalloc.SetsOverlap(c.Sets); i >= 0 {
			t.Fatalf("accepted overlapping sets %d and %d", i, j)
		}
		for i, set := range c.Sets {
			for _, r := range set {
				if r.Start.BitLen() != set[0].Start.BitLen() || !r.Subnet.Contains(r.Start) || !r.Subnet.Contains(r.End) || r.Start.Compare(r.End) > 0 {
					t.Fatalf("accepted a bad range %+v in set %d", r, i)
				}
			}
			if want := c.Requested[i]; want.IsValid() {
				r := set.RangeFor(want)
				if r == nil || !r.Allocatable(want) {
					t.Fatalf("requested %s accepted for set %d (%s)", want, i, set)
				}
			}
		}
	})
}
