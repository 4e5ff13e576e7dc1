package hostlocal_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

const dualIPAM = `{"ranges":[[{"subnet":"10.70.0.0/24"}],[{"subnet":"fd00:70::/64"}]]}`

func refBin(t testing.TB, release string) string {
	return filepath.Join(testenv.RefPluginDir(t, release), "host-local")
}

// Reservations made by the reference v1.9.1 are seen, kept and released by ours.
func TestCompatReferenceThenOurs(t *testing.T) {
	e := setup(t)
	ref := refBin(t, "v1.9.1")
	conf := e.conf(t, "1.0.0", dualIPAM, nil)
	refAdd := e.run(t, ref, "ADD", "r1", conf).MustSucceed(t)
	if got := e.add(t, ref, "r2", conf); !slices.Equal(got, []string{"10.70.0.3/24", "fd00:70::3/64"}) {
		t.Fatalf("reference r2 got %v", got)
	}
	e.add(t, ref, "r3", conf)
	before := e.reservations(t)

	// Seen: CHECK against the reference's own result; ADD does not reuse, and continues its
	// round robin from the reference's last_reserved_ip.
	e.run(t, e.ours, "CHECK", "r1", withPrev(t, conf, refAdd.Stdout)).MustSucceed(t)
	if got := e.add(t, e.ours, "o1", conf); !slices.Equal(got, []string{"10.70.0.5/24", "fd00:70::5/64"}) {
		t.Fatalf("ours after the reference got %v", got)
	}
	// Kept: the reference's files are untouched.
	after := e.reservations(t)
	for ip, c := range before {
		if after[ip] != c {
			t.Fatalf("reservation %s changed from %q to %q", ip, c, after[ip])
		}
	}
	// Released: our DEL frees what the reference reserved; the reference then re-finds it free.
	e.run(t, e.ours, "DEL", "r2", conf).MustSucceed(t)
	if got := e.heldBy(t, "r2"); len(got) != 0 {
		t.Fatalf("our DEL left the reference's %v", got)
	}
	e.run(t, e.ours, "CHECK", "r2", conf).MustFail(t, 999)
	// The reference DELs r1 behind our back; we notice.
	e.run(t, ref, "DEL", "r1", conf).MustSucceed(t)
	e.run(t, e.ours, "CHECK", "r1", conf).MustFail(t, 999)
	e.run(t, e.ours, "CHECK", "r3", conf).MustSucceed(t)
	// Legacy reservations (container ID only, from reference versions before 0.7) too.
	os.WriteFile(filepath.Join(e.netDir(), "10.70.0.100"), []byte("legacy-1"), 0o600)
	e.run(t, e.ours, "CHECK", "legacy-1", conf).MustSucceed(t)
	e.run(t, e.ours, "DEL", "legacy-1", conf).MustSucceed(t)
	if got := e.heldBy(t, "legacy-1"); len(got) != 0 {
		t.Fatalf("legacy reservation left: %v", got)
	}
	e.checkIndex(t)
}

// Reservations made by ours are seen, kept and released by the reference v1.9.1.
func TestCompatOursThenReference(t *testing.T) {
	e := setup(t)
	ref := refBin(t, "v1.9.1")
	conf := e.conf(t, "1.0.0", dualIPAM, nil)
	o1 := e.run(t, e.ours, "ADD", "o1", conf).MustSucceed(t)
	e.add(t, e.ours, "o2", conf)
	e.add(t, e.ours, "o3", conf)
	e.run(t, ref, "CHECK", "o1", withPrev(t, conf, o1.Stdout)).MustSucceed(t)
	e.run(t, ref, "CHECK", "o2", conf).MustSucceed(t)
	// The reference's duplicate check finds our reservation of o1.
	e.run(t, ref, "ADD", "o1", conf).MustFail(t, 999).ErrContains(t, "duplicate allocation")
	if got := e.add(t, ref, "r1", conf); !slices.Equal(got, []string{"10.70.0.5/24", "fd00:70::5/64"}) {
		t.Fatalf("reference after ours got %v", got)
	}
	e.run(t, ref, "DEL", "o2", conf).MustSucceed(t)
	if got := e.heldBy(t, "o2"); len(got) != 0 {
		t.Fatalf("the reference's DEL left our %v", got)
	}
	// Ours sees what the reference did in between.
	e.run(t, e.ours, "CHECK", "o2", conf).MustFail(t, 999)
	e.run(t, e.ours, "CHECK", "r1", conf).MustSucceed(t)
	e.run(t, e.ours, "DEL", "r1", conf).MustSucceed(t)
	if got := e.add(t, e.ours, "o4", conf); !slices.Equal(got, []string{"10.70.0.6/24", "fd00:70::6/64"}) {
		t.Fatalf("ours after the reference got %v", got)
	}
	// The reference reads exactly what it writes.
	want := map[string]string{
		"10.70.0.2": "o1\r\neth0", "fd00:70::2": "o1\r\neth0",
		"10.70.0.4": "o3\r\neth0", "fd00:70::4": "o3\r\neth0",
		"10.70.0.6": "o4\r\neth0", "fd00:70::6": "o4\r\neth0",
	}
	if got := e.reservations(t); !maps.Equal(got, want) {
		t.Fatalf("reservations %v, want %v", got, want)
	}
	e.checkIndex(t)
	e.run(t, ref, "ADD", "r2", conf).MustSucceed(t)
}

// The reference v1.10.0's GC deletes every file of the network directory that is not a
// reservation, the lock or last_reserved_ip: run over our state, it loses nothing we need.
func TestReferenceGCOverOurState(t *testing.T) {
	e := setup(t)
	ref10 := refBin(t, "v1.10.0")
	conf := e.conf(t, "1.1.0", dualIPAM, nil)
	for _, c := range []string{"a", "b", "c"} {
		e.add(t, e.ours, c, conf)
	}
	listing := func() []string {
		es, _ := os.ReadDir(e.netDir())
		var out []string
		for _, de := range es {
			out = append(out, de.Name())
		}
		return out
	}
	before := listing()
	gc := func(valid ...string) {
		list := []map[string]string{}
		for _, v := range valid {
			list = append(list, map[string]string{"containerID": v, "ifname": "eth0"})
		}
		var m map[string]any
		json.Unmarshal(conf, &m)
		m["cni.dev/valid-attachments"] = list
		b, _ := json.Marshal(m)
		e.run(t, ref10, "GC", "", b).MustSucceed(t)
	}
	gc("a", "b", "c")
	if after := listing(); !slices.Equal(after, before) {
		t.Fatalf("reference GC removed some of our files: %v -> %v", before, after)
	}
	for _, c := range []string{"a", "b", "c"} {
		e.run(t, e.ours, "CHECK", c, conf).MustSucceed(t)
	}
	e.run(t, e.ours, "DEL", "a", conf).MustSucceed(t)
	if got := e.add(t, e.ours, "d", conf); !slices.Equal(got, []string{"10.70.0.5/24", "fd00:70::5/64"}) {
		t.Fatalf("round robin lost after the reference's GC: %v", got)
	}
	// Now the reference's GC releases c and d: ours notices.
	gc("b")
	e.run(t, e.ours, "CHECK", "c", conf).MustFail(t, 999)
	e.run(t, e.ours, "CHECK", "b", conf).MustSucceed(t)
	if got := e.add(t, e.ours, "e", conf); !slices.Equal(got, []string{"10.70.0.6/24", "fd00:70::6/64"}) {
		t.Fatalf("after the reference's GC got %v", got)
	}
	e.checkIndex(t)
}
