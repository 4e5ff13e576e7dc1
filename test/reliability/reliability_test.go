// Package reliability is the suite's reliability suite (issue 16): churn, crashes and bad
// input against a plugin dir, with the node's state compared before and after.
//
// Every test runs on two sides: "ours" (testenv.PluginDir, i.e. $CNI_SUITE_BIN or a build of
// ./plugins/...) and "reference" (the reference plugins v1.9.1). A side lacking a plugin the
// test needs is skipped with a message naming it (our bridge, host-local and portmap land
// from their branches). The reference side validates the harness: where the reference is
// clean the same assertions hold for it; where it leaks, the leak is a documented finding
// that the test asserts is still detected (a positive control for the leak detector), and
// our side must not have it.
//
// make test runs a short version; CNI_SUITE_LONG=1 (make e2e) runs the sizes:
// 500 churn cycles across 50 pods, 100 crash trials.
package reliability

import (
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
	"github.com/cni-suite/cni-suite/test/internal/harness"
)

// long is true under make e2e.
var long = os.Getenv("CNI_SUITE_LONG") == "1"

// pick returns the short or the long value.
func pick(short, full int) int {
	if long {
		return full
	}
	return short
}

type side struct {
	name string
	dir  string
	ref  bool
}

var bridgeChain = []string{"bridge", "host-local", "portmap"}

// forSides runs fn once per side as a subtest; a side lacking one of the plugins is skipped.
func forSides(t *testing.T, plugins []string, fn func(t *testing.T, s side)) {
	t.Helper()
	testenv.RequireRoot(t)
	for _, s := range []side{
		{name: "ours", dir: testenv.PluginDir(t)},
		{name: "reference", dir: testenv.RefPluginDir(t, testenv.RefVersion), ref: true},
	} {
		t.Run(s.name, func(t *testing.T) {
			if m := harness.HasPlugins(s.dir, plugins...); len(m) > 0 {
				t.Skipf("%s lacks %s in %s (not built yet)", s.name, strings.Join(m, ", "), s.dir)
			}
			fn(t, s)
		})
	}
}

// pods makes n pod netns removed at cleanup.
func pods(t *testing.T, n int) []*harness.NS {
	t.Helper()
	all, err := harness.NewNSBatch("rpod", n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := harness.DeleteAll(all); err != nil {
			t.Error(err)
		}
	})
	return all
}

// capture takes the node's state; pods are netns paths whose links are part of it.
func capture(t *testing.T, node *testenv.Node, podPaths ...string) harness.State {
	t.Helper()
	s, err := harness.Capture(node.Name, node.DataDir, podPaths...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func paths(all []*harness.NS) []string {
	out := make([]string, len(all))
	for i, n := range all {
		out[i] = n.Path
	}
	return out
}

// seeded returns a random source whose seed is logged, so a failure can be replayed with
// CNI_SUITE_SEED.
func seeded(t *testing.T) *rand.Rand {
	seed := rand.Uint64()
	if s := os.Getenv("CNI_SUITE_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CNI_SUITE_SEED: %v", err)
		}
	}
	t.Logf("random seed %d (replay with CNI_SUITE_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
