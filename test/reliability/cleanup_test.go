package reliability

import (
	"context"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
	"github.com/cni-suite/cni-suite/test/internal/harness"
)

// cleanupCase is one way a runtime tears a pod down; refLeaks are the kinds of state the
// reference v1.9.1 is known to leave behind that way (a finding each; ours must leave none).
type cleanupCase struct {
	name     string
	refLeaks []string
	// run gets two added pods (a and b, b is to stay) and tears a down.
	run func(t *testing.T, e *cleanupEnv)
}

type cleanupEnv struct {
	rt       *harness.Runtime
	cacheDir string
	a, b     harness.Pod
	aNS      *harness.NS
}

var cleanupCases = []cleanupCase{
	{name: "del-twice", run: func(t *testing.T, e *cleanupEnv) {
		mustDel(t, e.rt, e.a)
		mustDel(t, e.rt, e.a)
	}},
	{name: "del-never-added", run: func(t *testing.T, e *cleanupEnv) {
		mustDel(t, e.rt, e.a)
		mustDel(t, e.rt, harness.NewPod(99, e.aNS.Path))
	}},
	{name: "del-without-prevresult", run: func(t *testing.T, e *cleanupEnv) {
		// The runtime lost its result cache (libcni's cache dir) but the netns is there.
		if err := harness.ForgetCached(e.cacheDir, e.a); err != nil {
			t.Fatal(err)
		}
		mustDel(t, e.rt, e.a)
	}},
	{name: "del-netns-gone", refLeaks: []string{"masquerade rules"}, run: func(t *testing.T, e *cleanupEnv) {
		// The sandbox's netns was removed before the runtime's DEL (it has prevResult).
		_ = e.aNS.Delete()
		mustDel(t, e.rt, e.a)
	}},
	{name: "del-empty-netns", refLeaks: []string{"masquerade rules"}, run: func(t *testing.T, e *cleanupEnv) {
		a := e.a
		a.NetNS = ""
		mustDel(t, e.rt, a)
		_ = e.aNS.Delete()
	}},
	{name: "gc-after-netns-gone", refLeaks: []string{"masquerade rules"}, run: func(t *testing.T, e *cleanupEnv) {
		// libcni's GC DELs the cached attachment a (netns gone) then GCs every plugin.
		_ = e.aNS.Delete()
		if err := e.rt.GC(context.Background(), []harness.Pod{e.b}); err != nil {
			t.Fatalf("GC: %v", err)
		}
	}},
	{name: "gc-after-cache-lost", refLeaks: []string{"masquerade rules", "portmap rules", "reservation file"},
		run: func(t *testing.T, e *cleanupEnv) {
			// Only the plugins' own GC can find a: the runtime lost its cache.
			_ = e.aNS.Delete()
			if err := harness.ForgetCached(e.cacheDir, e.a); err != nil {
				t.Fatal(err)
			}
			if err := e.rt.GC(context.Background(), []harness.Pod{e.b}); err != nil {
				t.Fatalf("GC: %v", err)
			}
		}},
}

func mustDel(t *testing.T, rt *harness.Runtime, p harness.Pod) {
	t.Helper()
	if err := rt.Del(context.Background(), p); err != nil {
		t.Fatalf("DEL %s: %v", p.ID, err)
	}
}

// TestCleanupPaths: every way a pod is torn down (DEL twice, DEL without prevResult,
// without netns, GC with and without the runtime's cache) must leave the node as it was
// before the pod, and the other pod working.
func TestCleanupPaths(t *testing.T) {
	forSides(t, bridgeChain, func(t *testing.T, s side) {
		for _, c := range cleanupCases {
			t.Run(c.name, func(t *testing.T) {
				node := testenv.NewNode(t)
				ns := pods(t, 2)
				cacheDir := filepath.Join(t.TempDir(), "cache")
				rt, err := harness.NewRuntime(s.dir, cacheDir, node.Path, harness.Net{DataDir: node.DataDir}.Conflist(), nil)
				if err != nil {
					t.Fatal(err)
				}
				ctx := context.Background()
				e := &cleanupEnv{rt: rt, cacheDir: cacheDir, a: harness.NewPod(0, ns[0].Path), b: harness.NewPod(1, ns[1].Path), aNS: ns[0]}
				if _, err := rt.Add(ctx, e.b); err != nil {
					t.Fatalf("ADD b: %v", err)
				}
				before := capture(t, node, ns[1].Path)
				if _, err := rt.Add(ctx, e.a); err != nil {
					t.Fatalf("ADD a: %v", err)
				}
				c.run(t, e)
				_ = e.aNS.Delete() // as the runtime does after the DEL; its veth goes with it
				if err := harness.WaitVeths(node.Name, 1, 10*time.Second); err != nil {
					t.Error(err)
				}
				after := capture(t, node, ns[1].Path)
				if err := rt.Check(ctx, e.b); err != nil {
					t.Errorf("the other pod broke: CHECK: %v", err)
				}
				diff := harness.Diff(before, after)
				kinds := map[string]bool{}
				for _, l := range diff {
					kinds[classify(l)] = true
				}
				var got []string
				for k := range kinds {
					got = append(got, k)
				}
				sort.Strings(got)
				if has, _ := harness.HasLink(ns[0].Path, "eth0"); has {
					got = append(got, "pod link")
				}
				want := []string(nil)
				if s.ref {
					want = c.refLeaks
				}
				if len(got) > 0 && s.ref && reflect.DeepEqual(got, want) {
					t.Logf("FINDING (reference %s, known): %s leaves %s:\n  %s", testenv.RefVersion, c.name,
						strings.Join(got, ", "), strings.Join(diff, "\n  "))
					return
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s after %s left %v, want %v:\n  %s", s.name, c.name, got, want, strings.Join(diff, "\n  "))
				}
			})
		}
	})
}
