package hostlocal_test

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/ipalloc"
)

// 200 plugin processes started at once on one network get 200 distinct addresses.
func TestConcurrentAdds(t *testing.T) {
	e := setup(t)
	conf := e.conf(t, "1.0.0", `{"ranges":[[{"subnet":"10.70.0.0/16"}],[{"subnet":"fd00:70::/64"}]]}`, nil)
	const n = 200
	procs := make([]*proc, n)
	// Start them all first, then wait: they really run at the same time.
	for i := range procs {
		p, err := e.start(e.ours, "ADD", fmt.Sprintf("conc-%03d", i), conf)
		if err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		procs[i] = p
	}
	seen := map[string]string{}
	for i, p := range procs {
		if cerr, err := p.wait(); err != nil || cerr != nil {
			t.Fatalf("ADD %d: %v %v\n%s", i, err, cerr, p.stderr.String())
		}
		var r struct{ IPs []struct{ Address string } }
		if err := json.Unmarshal(p.stdout.Bytes(), &r); err != nil || len(r.IPs) != 2 {
			t.Fatalf("ADD %d result: %v %s", i, err, p.stdout.String())
		}
		for _, ip := range r.IPs {
			if other, dup := seen[ip.Address]; dup {
				t.Fatalf("%s handed to conc-%03d and %s", ip.Address, i, other)
			}
			seen[ip.Address] = fmt.Sprintf("conc-%03d", i)
		}
	}
	if got := len(e.reservations(t)); got != 2*n {
		t.Fatalf("%d reservation files, want %d", got, 2*n)
	}
	e.checkIndex(t)
	// And as many DELs at once leave nothing.
	for i := range procs {
		p, err := e.start(e.ours, "DEL", fmt.Sprintf("conc-%03d", i), conf)
		if err != nil {
			t.Fatal(err)
		}
		procs[i] = p
	}
	for i, p := range procs {
		if cerr, err := p.wait(); err != nil || cerr != nil {
			t.Fatalf("DEL %d: %v %v", i, err, cerr)
		}
	}
	if got := e.reservations(t); len(got) != 0 {
		t.Fatalf("%d reservations left after DEL", len(got))
	}
	e.checkIndex(t)
}

// An ADD killed with SIGKILL at each point of a reservation leaves no half-written file, and
// what it leaves is removed by the next DEL (or GC) of that container.
func TestKilledAddAtEachPoint(t *testing.T) {
	e := setup(t)
	conf := e.conf(t, "1.1.0", `{"ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"fd00:70::/64"}]]}`, nil)
	e.add(t, e.ours, "survivor", conf)
	for i, point := range ipalloc.CrashPoints {
		for _, cleanup := range []string{"DEL", "GC"} {
			cid := fmt.Sprintf("killed-%d-%s", i, cleanup)
			p, err := e.start(e.ours, "ADD", cid, conf, ipalloc.CrashEnv+"="+point)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("%s: ADD was not killed at %q: %v %s", cid, point, err, p.stdout.String())
			}
			e.checkDebris(t)
			// The next ADD of someone else works and does not take what the killed one holds.
			got := e.add(t, e.ours, "next-"+cid, conf)
			for _, ip := range e.heldBy(t, cid) {
				if strings.HasPrefix(got[0], ip+"/") || strings.HasPrefix(got[1], ip+"/") {
					t.Fatalf("%s: %s handed out twice", point, ip)
				}
			}
			switch cleanup {
			case "DEL":
				e.run(t, e.ours, "DEL", cid, conf).MustSucceed(t)
			case "GC":
				e.gcKeeping(t, conf, cid)
			}
			if left := e.heldBy(t, cid); len(left) != 0 {
				t.Fatalf("killed at %q, %s left %v", point, cleanup, left)
			}
			if len(e.heldBy(t, "survivor")) != 2 || len(e.heldBy(t, "next-"+cid)) != 2 {
				t.Fatalf("killed at %q: %s removed someone else's addresses", point, cleanup)
			}
			e.checkIndex(t)
		}
	}
}

// Kills at random moments (not only at the named points), over many ADDs.
func TestKilledAddAtRandomMoments(t *testing.T) {
	e := setup(t)
	conf := e.conf(t, "1.1.0", `{"ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"fd00:70::/64"}]]}`, nil)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	// How long a whole ADD takes here: kills are spread over that span.
	begin := time.Now()
	e.add(t, e.ours, "timing", conf)
	span := time.Since(begin)
	e.run(t, e.ours, "DEL", "timing", conf).MustSucceed(t)
	rounds := 60
	if os.Getenv("CNI_SUITE_LONG") == "1" {
		rounds = 600
	}
	leftovers := 0
	for i := 0; i < rounds; i++ {
		cid := fmt.Sprintf("rk-%d", i)
		p, err := e.start(e.ours, "ADD", cid, conf)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rng.Int63n(int64(span))))
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.wait()
		e.checkDebris(t)
		if len(e.heldBy(t, cid)) > 0 {
			leftovers++
		}
		if rng.Intn(2) == 0 {
			e.run(t, e.ours, "DEL", cid, conf).MustSucceed(t)
		} else {
			e.gcKeeping(t, conf, cid)
		}
		if left := e.reservations(t); len(left) != 0 {
			t.Fatalf("round %d: left %v", i, left)
		}
		e.checkIndex(t)
	}
	t.Logf("%d rounds, ADD span %v, %d killed after reserving something", rounds, span, leftovers)
}

// gcKeeping runs GC with every attachment that holds an address as valid, except drop's.
func (e *env) gcKeeping(t *testing.T, conf []byte, drop string) {
	t.Helper()
	valid := []map[string]string{}
	seen := map[string]bool{}
	for _, content := range e.reservations(t) {
		cid, _, _ := strings.Cut(content, "\r\n")
		if cid != drop && !seen[cid] {
			seen[cid] = true
			valid = append(valid, map[string]string{"containerID": cid, "ifname": "eth0"})
		}
	}
	var m map[string]any
	json.Unmarshal(conf, &m)
	m["cni.dev/valid-attachments"] = valid
	b, _ := json.Marshal(m)
	e.run(t, e.ours, "GC", "", b).MustSucceed(t)
}
