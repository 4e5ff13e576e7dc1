package reliability

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
	"github.com/cni-suite/cni-suite/test/internal/harness"
)

// TestChurn: ADD, CHECK and DEL of sandboxes across a set of pods, in random order from
// several concurrent workers (never two calls for one pod at once, as a runtime does),
// each ADD a new sandbox (container ID). No address may be handed to two live sandboxes;
// every call must succeed; after the last DEL the node must be exactly as it was after a
// warm-up ADD+DEL (which creates the shared bridge and chains): no reservation, veth, NAT
// rule or chain left. Short: 30 cycles across 6 pods; long: 500 across 50.
func TestChurn(t *testing.T) {
	nPods, cycles, workers := pick(6, 50), pick(30, 500), pick(3, 8)
	forSides(t, bridgeChain, func(t *testing.T, s side) {
		node := testenv.NewNode(t)
		netnss := pods(t, nPods)
		rt, err := harness.NewRuntime(s.dir, filepath.Join(t.TempDir(), "cache"), node.Path,
			harness.Net{DataDir: node.DataDir}.Conflist(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		warm := harness.NewPod(0, netnss[0].Path)
		if _, err := rt.Add(ctx, warm); err != nil {
			t.Fatalf("warm-up ADD: %v", err)
		}
		if err := rt.Del(ctx, warm); err != nil {
			t.Fatalf("warm-up DEL: %v", err)
		}
		before := capture(t, node, paths(netnss)...)
		rnd := seeded(t)
		var rndMu sync.Mutex
		intn := func(n int) int { rndMu.Lock(); defer rndMu.Unlock(); return rnd.IntN(n) }

		type pod struct {
			mu    sync.Mutex
			index int
			netns string
			live  bool
			sb    harness.Pod
			ip    string
		}
		all := make([]*pod, nPods)
		for i := range all {
			all[i] = &pod{index: i, netns: netnss[i].Path}
		}
		var ownerMu sync.Mutex
		owner := map[string]string{} // IP -> container ID of the live sandbox holding it
		var adds, checks, dels, failures atomic.Int64
		fail := func(format string, args ...any) {
			if failures.Add(1) <= 10 {
				t.Errorf(format, args...)
			}
		}
		step := func(p *pod) {
			switch {
			case !p.live:
				sb := harness.NewPod(p.index, p.netns)
				res, err := rt.Add(ctx, sb)
				adds.Add(1)
				if err != nil {
					fail("ADD %s: %v", sb.ID, err)
					_ = rt.Del(ctx, sb) // as a runtime does after a failed ADD
					return
				}
				ip := harness.PodIPv4(res)
				ownerMu.Lock()
				if other, taken := owner[ip]; taken {
					fail("address %s handed to %s while live sandbox %s holds it", ip, sb.ID, other)
				}
				owner[ip] = sb.ID
				ownerMu.Unlock()
				p.live, p.sb, p.ip = true, sb, ip
			case intn(3) == 0:
				checks.Add(1)
				if err := rt.Check(ctx, p.sb); err != nil {
					fail("CHECK %s: %v", p.sb.ID, err)
				}
			default:
				// Not live any more from the moment DEL starts: its address may be handed
				// out again as soon as host-local released it.
				ownerMu.Lock()
				delete(owner, p.ip)
				ownerMu.Unlock()
				if err := rt.Del(ctx, p.sb); err != nil {
					fail("DEL %s: %v", p.sb.ID, err)
				}
				p.live = false
				dels.Add(1)
			}
		}
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for dels.Load() < int64(cycles) && failures.Load() < 10 {
					p := all[intn(nPods)]
					if p.mu.TryLock() {
						step(p)
						p.mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		for _, p := range all {
			if p.live {
				if err := rt.Del(ctx, p.sb); err != nil {
					t.Errorf("final DEL %s: %v", p.sb.ID, err)
				}
				dels.Add(1)
			}
		}
		after := capture(t, node, paths(netnss)...)
		t.Logf("%s: %d ADD, %d CHECK, %d DEL across %d pods with %d workers", s.name, adds.Load(), checks.Load(), dels.Load(), nPods, workers)
		if d := harness.Diff(before, after); len(d) > 0 {
			t.Errorf("%s left the node changed after churn (%d lines):\n%s", s.name, len(d), strings.Join(d, "\n"))
		}
	})
}
