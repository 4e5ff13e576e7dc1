package ipalloc

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var ctx = context.Background()

func newStore(t *testing.T) *Store {
	t.Helper()
	return New(t.TempDir(), "net1", Options{Logf: t.Logf})
}

func set(t *testing.T, subnets ...string) RangeSet {
	t.Helper()
	var specs []RangeSpec
	for _, s := range subnets {
		sp := RangeSpec{}
		parts := strings.Split(s, ",") // subnet[,start,end]
		sp.Subnet = parts[0]
		if len(parts) == 3 {
			sp.RangeStart, sp.RangeEnd = parts[1], parts[2]
		}
		specs = append(specs, sp)
	}
	rs, err := NewRangeSet("test", specs)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func alloc(t *testing.T, s *Store, cid string, sets ...RangeSet) []string {
	t.Helper()
	leases, err := s.Allocate(ctx, Request{ContainerID: cid, IfName: "eth0", Sets: sets})
	if err != nil {
		t.Fatalf("allocate %s: %v", cid, err)
	}
	var out []string
	for _, l := range leases {
		out = append(out, l.IP.String())
	}
	return out
}

func release(t *testing.T, s *Store, cid string) []string {
	t.Helper()
	ips, err := s.Release(ctx, cid, "eth0")
	if err != nil {
		t.Fatalf("release %s: %v", cid, err)
	}
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}
	sort.Strings(out)
	return out
}

// checkIndex asserts the index matches the directory and, after our own operations, that it
// is fresh (an operation that forgot to write it back would make every next one rebuild it).
func checkIndex(t *testing.T, s *Store) {
	t.Helper()
	fresh, err := s.CheckIndex(ctx)
	if err != nil {
		t.Fatalf("index disagrees with the directory: %v", err)
	}
	if !fresh {
		t.Fatalf("index not fresh after our own operations")
	}
}

// dirNames lists the network directory.
func dirNames(t *testing.T, s *Store) []string {
	t.Helper()
	es, err := os.ReadDir(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func writeReservation(t *testing.T, s *Store, ip, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(s.Dir(), ip), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRoundRobinWrapAndExhaustion(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/29") // .1 gateway, .7 broadcast: .2-.6
	for i := 2; i <= 6; i++ {
		if got := alloc(t, s, fmt.Sprintf("c%d", i), rs); got[0] != fmt.Sprintf("10.0.0.%d", i) {
			t.Fatalf("c%d got %v", i, got)
		}
	}
	_, err := s.Allocate(ctx, Request{ContainerID: "full", IfName: "eth0", Sets: []RangeSet{rs}})
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "range set 0") || !strings.Contains(err.Error(), "10.0.0.0/29") {
		t.Fatalf("exhausted set: error %v, want one naming range set 0 and its subnet", err)
	}
	if got, _ := s.Lookup(ctx, "full", "eth0"); len(got) != 0 {
		t.Fatalf("failed ADD reserved %v", got)
	}
	if got := release(t, s, "c4"); !slices.Equal(got, []string{"10.0.0.4"}) {
		t.Fatalf("release c4 = %v", got)
	}
	if got := alloc(t, s, "c7", rs); got[0] != "10.0.0.4" {
		t.Fatalf("only free address is .4, got %v", got)
	}
	release(t, s, "c2")
	release(t, s, "c3")
	// last is .4: .5 and .6 are taken, so it wraps past the gateway to .2.
	if got := alloc(t, s, "c8", rs); got[0] != "10.0.0.2" {
		t.Fatalf("after wrap got %v, want 10.0.0.2", got)
	}
	checkIndex(t, s)

	// A just-freed address is not reused at once.
	s2 := newStore(t)
	big := set(t, "10.0.1.0/24")
	a := alloc(t, s2, "a", big)
	release(t, s2, "a")
	if b := alloc(t, s2, "b", big); b[0] == a[0] || b[0] != "10.0.1.3" {
		t.Fatalf("after releasing %v got %v, want the next one", a, b)
	}
}

func TestSeveralRangesInASetAndDualStack(t *testing.T) {
	s := newStore(t)
	v4 := set(t, "10.0.0.0/30", "10.0.1.0/30") // one address each: .0.2, .1.2
	v6 := set(t, "fd00:5::/120")
	if got := alloc(t, s, "a", v4, v6); !slices.Equal(got, []string{"10.0.0.2", "fd00:5::2"}) {
		t.Fatalf("a: %v", got)
	}
	if got := alloc(t, s, "b", v4, v6); !slices.Equal(got, []string{"10.0.1.2", "fd00:5::3"}) {
		t.Fatalf("b: %v (second range used when the first is full)", got)
	}
	_, err := s.Allocate(ctx, Request{ContainerID: "c", IfName: "eth0", Sets: []RangeSet{v4, v6}})
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.0.0.0/30,10.0.1.0/30") {
		t.Fatalf("error %v, want exhaustion naming both subnets", err)
	}
	// All or nothing: the IPv6 set had room, but nothing stays reserved for c.
	if got, _ := s.Lookup(ctx, "c", "eth0"); len(got) != 0 {
		t.Fatalf("failed ADD left %v", got)
	}
	if got := release(t, s, "a"); !slices.Equal(got, []string{"10.0.0.2", "fd00:5::2"}) {
		t.Fatalf("release a = %v", got)
	}
	checkIndex(t, s)
}

func TestRequestedAddresses(t *testing.T) {
	s := newStore(t)
	v4, v6 := set(t, "10.0.0.0/24,10.0.0.1,10.0.0.255"), set(t, "fd00::/64")
	req := func(cid string, want ...string) error {
		r := Request{ContainerID: cid, IfName: "eth0", Sets: []RangeSet{v4, v6}, Requested: make([]netip.Addr, 2)}
		for i, w := range want {
			if w != "" {
				r.Requested[i] = mustAddr(w)
			}
		}
		_, err := s.Allocate(ctx, r)
		return err
	}
	if err := req("a", "10.0.0.50", "fd00::50"); err != nil {
		t.Fatal(err)
	}
	// A requested address moves last_reserved_ip, as the reference's does.
	if b, _ := os.ReadFile(filepath.Join(s.Dir(), "last_reserved_ip.1")); string(b) != "fd00::50" {
		t.Fatalf("last_reserved_ip.1 = %q", b)
	}
	if err := req("b", "", "fd00::50"); err == nil || !strings.Contains(err.Error(), "fd00::50 is not available in range set 1") {
		t.Fatalf("taken requested address: %v", err)
	}
	if got, _ := s.Lookup(ctx, "b", "eth0"); len(got) != 0 {
		t.Fatalf("failed ADD left %v reserved (the IPv4 one must be rolled back)", got)
	}
	if err := req("c", "10.0.0.1"); err == nil || !strings.Contains(err.Error(), "gateway") {
		t.Fatalf("gateway requested: %v", err)
	}
	if err := req("d", "10.0.0.255"); err == nil || !strings.Contains(err.Error(), "broadcast") {
		t.Fatalf("broadcast requested: %v", err)
	}
	checkIndex(t, s)
}

func TestDuplicateAllocation(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/24")
	alloc(t, s, "a", rs)
	_, err := s.Allocate(ctx, Request{ContainerID: "a", IfName: "eth0", Sets: []RangeSet{rs}})
	if err == nil || !strings.Contains(err.Error(), "duplicate allocation") {
		t.Fatalf("second ADD of one attachment: %v", err)
	}
	if _, err := s.Allocate(ctx, Request{ContainerID: "a", IfName: "eth1", Sets: []RangeSet{rs}}); err != nil {
		t.Fatalf("another interface of the same container: %v", err)
	}
	if got := release(t, s, "a"); len(got) != 1 {
		t.Fatalf("release a/eth0 released %v, want only its own", got)
	}
}

func TestReleaseUnknownAndMissingNetwork(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-there")
	s := New(dir, "net1", Options{})
	if ips, err := s.Release(ctx, "x", "eth0"); err != nil || len(ips) != 0 {
		t.Fatalf("release in a missing data dir: %v %v", ips, err)
	}
	if ips, err := s.GC(ctx, nil); err != nil || len(ips) != 0 {
		t.Fatalf("GC of a missing data dir: %v %v", ips, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("DEL/GC created the data dir: %v", err)
	}
	s = newStore(t)
	alloc(t, s, "a", set(t, "10.0.0.0/24"))
	if got := release(t, s, "unknown"); len(got) != 0 {
		t.Fatalf("released %v for an unknown container", got)
	}
	release(t, s, "a")
	if got := release(t, s, "a"); len(got) != 0 {
		t.Fatalf("second release released %v", got)
	}
}

func TestOnDiskFormat(t *testing.T) {
	old := unix.Umask(0o077) // the modes must not depend on the caller's umask
	defer unix.Umask(old)
	s := newStore(t)
	alloc(t, s, "cid-1", set(t, "10.0.0.0/24"), set(t, "fd00:1::/64"))
	for name, want := range map[string]string{
		"10.0.0.2": "cid-1\r\neth0", "fd00:1::2": "cid-1\r\neth0",
		"last_reserved_ip.0": "10.0.0.2", "last_reserved_ip.1": "fd00:1::2",
	} {
		p := filepath.Join(s.Dir(), name)
		b, err := os.ReadFile(p)
		if err != nil || string(b) != want {
			t.Errorf("%s = %q (%v), want %q", name, b, err, want)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, st.Mode())
		}
	}
	st, _ := os.Stat(s.Dir())
	if st.Mode().Perm() != 0o755 {
		t.Errorf("network directory mode %v, want 0755", st.Mode())
	}
	if got := dirNames(t, s); !slices.Equal(got, []string{"10.0.0.2", "fd00:1::2", "last_reserved_ip.0", "last_reserved_ip.1", "lock"}) {
		t.Errorf("network directory holds %v: nothing of ours besides the reference's files", got)
	}
	if filepath.Dir(s.IndexDir()) != filepath.Dir(s.Dir()) || !strings.HasPrefix(filepath.Base(s.IndexDir()), ".") {
		t.Errorf("index %s is not a dot-directory beside %s", s.IndexDir(), s.Dir())
	}
}

func TestForeignChangesAreSeen(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/24")
	alloc(t, s, "a", rs) // .2; the index now exists and is fresh
	// Another implementation (the reference) reserves .3 for x and .4 for a legacy container.
	writeReservation(t, s, "10.0.0.3", "x\r\neth0")
	writeReservation(t, s, "10.0.0.4", "legacy")
	if got := alloc(t, s, "b", rs); got[0] != "10.0.0.5" {
		t.Fatalf("b got %v: addresses reserved by another program must not be handed out", got)
	}
	if got, _ := s.Lookup(ctx, "x", "eth0"); len(got) != 1 || got[0].String() != "10.0.0.3" {
		t.Fatalf("lookup x = %v", got)
	}
	if got := release(t, s, "legacy"); !slices.Equal(got, []string{"10.0.0.4"}) {
		t.Fatalf("release of a legacy (container-ID-only) reservation = %v", got)
	}
	// Another program releases b's address behind our back, and hands .2 to someone else.
	os.Remove(filepath.Join(s.Dir(), "10.0.0.5"))
	os.Remove(filepath.Join(s.Dir(), "10.0.0.2"))
	writeReservation(t, s, "10.0.0.2", "y\r\neth0")
	if got := release(t, s, "a"); len(got) != 0 {
		t.Fatalf("release a removed %v, which now belongs to y", got)
	}
	if got := release(t, s, "x"); !slices.Equal(got, []string{"10.0.0.3"}) {
		t.Fatalf("release x = %v", got)
	}
	checkIndex(t, s)
}

func TestStampCatchesRewrittenLastReserved(t *testing.T) {
	s := newStore(t)
	alloc(t, s, "a", set(t, "10.0.0.0/24"))
	if v, why := s.loadFresh(); v == nil {
		t.Fatalf("index not fresh right after an ADD: %s", why)
	}
	// The reference rewrites last_reserved_ip in place; even if the directory's timestamps
	// did not move, the stamp sees it.
	if err := writeFile(filepath.Join(s.Dir(), "last_reserved_ip.0"), []byte("10.0.0.77"), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, why := s.loadFresh(); v != nil || !strings.Contains(why, "last_reserved_ip.0") {
		t.Fatalf("stale index taken as fresh (%q)", why)
	}
	// A new directory entry moves the directory's timestamps.
	alloc(t, s, "b", set(t, "10.0.0.0/24"))
	writeReservation(t, s, "10.0.0.99", "z\r\neth0")
	if v, why := s.loadFresh(); v != nil || !strings.Contains(why, "changed") {
		t.Fatalf("stale index taken as fresh (%q)", why)
	}
}

func TestIndexDamageIsSurvived(t *testing.T) {
	rs := set(t, "10.0.0.0/28")
	damage := map[string]func(s *Store){
		"removed":          func(s *Store) { os.RemoveAll(s.IndexDir()) },
		"stamp-garbage":    func(s *Store) { os.WriteFile(filepath.Join(s.IndexDir(), "stamp"), []byte("junk"), 0o600) },
		"stamp-truncated":  func(s *Store) { os.Truncate(filepath.Join(s.IndexDir(), "stamp"), 40) },
		"bucket-garbage":   func(s *Store) { garbleAll(s, "b", "no space here\n") },
		"bucket-edited":    func(s *Store) { editAll(s, "b", `"a\r\neth0"`, `"q\r\neth0"`) },
		"bucket-cut":       func(s *Store) { editAll(s, "b", "#", "") },
		"block-garbage":    func(s *Store) { garbleAll(s, "u", "short") },
		"buckets-removed":  func(s *Store) { os.RemoveAll(filepath.Join(s.IndexDir(), "b")) },
		"index-is-a-file":  func(s *Store) { os.RemoveAll(s.IndexDir()); os.WriteFile(s.IndexDir(), nil, 0o600) },
		"tmp-left-linked":  func(s *Store) { os.Link(filepath.Join(s.Dir(), "10.0.0.2"), filepath.Join(s.IndexDir(), "tmp")) },
		"other-boot-stamp": func(s *Store) { rewriteStamp(s, "boot ", "boot 00000000-dead") },
	}
	for name, fn := range damage {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			alloc(t, s, "a", rs)
			alloc(t, s, "b", rs)
			fn(s)
			if got, _ := s.Lookup(ctx, "a", "eth0"); len(got) != 1 || got[0].String() != "10.0.0.2" {
				t.Fatalf("lookup a = %v", got)
			}
			if got := alloc(t, s, "c", rs); got[0] != "10.0.0.4" {
				t.Fatalf("c got %v", got)
			}
			if got := release(t, s, "b"); !slices.Equal(got, []string{"10.0.0.3"}) {
				t.Fatalf("release b = %v", got)
			}
			if b, err := os.ReadFile(filepath.Join(s.Dir(), "10.0.0.2")); err != nil || string(b) != "a\r\neth0" {
				t.Fatalf("a's reservation damaged: %q %v", b, err)
			}
			if name == "index-is-a-file" { // no index can be kept: the directory alone serves
				if fresh, err := s.CheckIndex(ctx); fresh || err != nil {
					t.Fatalf("fresh %v, %v", fresh, err)
				}
				return
			}
			checkIndex(t, s)
		})
	}
}

func garbleAll(s *Store, sub, content string) {
	es, _ := os.ReadDir(filepath.Join(s.IndexDir(), sub))
	for _, e := range es {
		os.WriteFile(filepath.Join(s.IndexDir(), sub, e.Name()), []byte(content), 0o600)
	}
}

func editAll(s *Store, sub, from, to string) {
	es, _ := os.ReadDir(filepath.Join(s.IndexDir(), sub))
	for _, e := range es {
		p := filepath.Join(s.IndexDir(), sub, e.Name())
		b, _ := os.ReadFile(p)
		os.WriteFile(p, []byte(strings.ReplaceAll(string(b), from, to)), 0o600)
	}
}

func rewriteStamp(s *Store, prefix, line string) {
	p := filepath.Join(s.IndexDir(), "stamp")
	b, _ := os.ReadFile(p)
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) {
			lines[i] = line
		}
	}
	os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o600)
}

// An index that looks fresh but claims the set is full is not believed: the directory is.
func TestFullLookingIndexIsVerified(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/24")
	alloc(t, s, "a", rs)
	full := new(bitmap)
	for i := range full {
		full[i] = ^uint64(0)
	}
	base, _ := blockOf(mustAddr("10.0.0.0"))
	if err := os.WriteFile(filepath.Join(s.IndexDir(), "u", blockName(base)), full.marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, why := s.loadFresh(); v == nil {
		t.Fatalf("test setup: index not fresh: %s", why)
	}
	if got := alloc(t, s, "b", rs); got[0] != "10.0.0.3" {
		t.Fatalf("b got %v", got)
	}
	checkIndex(t, s)
}

func TestEmptyReservationFilesAreDebris(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/24")
	alloc(t, s, "a", rs)
	// What the reference leaves when killed between its O_EXCL create and its write.
	writeReservation(t, s, "10.0.0.3", "")
	writeReservation(t, s, "10.0.0.9", "  \r\n")
	if got := alloc(t, s, "b", rs); got[0] != "10.0.0.3" {
		t.Fatalf("b got %v, want the empty file's address reclaimed", got)
	}
	if _, err := s.GC(ctx, []Attachment{{"a", "eth0"}, {"b", "eth0"}}); err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, s); slices.Contains(got, "10.0.0.9") {
		t.Fatalf("GC kept an empty reservation file: %v", got)
	}
	checkIndex(t, s)
}

func TestGC(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/24")
	alloc(t, s, "keep", rs)
	alloc(t, s, "gone", rs)
	s.Allocate(ctx, Request{ContainerID: "twoif", IfName: "eth1", Sets: []RangeSet{rs}})
	alloc(t, s, "twoif", rs)
	writeReservation(t, s, "10.0.0.100", "legacy-kept")
	writeReservation(t, s, "10.0.0.101", "legacy-gone")
	writeReservation(t, s, "not-an-ip", "whatever") // not a reservation: not ours to delete
	released, err := s.GC(ctx, []Attachment{{"keep", "eth0"}, {"twoif", "eth0"}, {"legacy-kept", "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ip := range released {
		got = append(got, ip.String())
	}
	sort.Strings(got)
	if !slices.Equal(got, []string{"10.0.0.101", "10.0.0.3", "10.0.0.4"}) {
		t.Fatalf("GC released %v", got)
	}
	if names := dirNames(t, s); !slices.Contains(names, "not-an-ip") || !slices.Contains(names, "last_reserved_ip.0") || !slices.Contains(names, "lock") {
		t.Fatalf("GC removed what is not a reservation: %v", names)
	}
	checkIndex(t, s)
	if _, err := s.GC(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range dirNames(t, s) {
		if _, ok := reservationName(n); ok {
			t.Fatalf("GC with no valid attachment kept %s", n)
		}
	}
	checkIndex(t, s)
}

// A random mix of our operations and another program's, checked against a model and the
// index checked against the directory after each step.
func TestRandomOperationsAgainstModel(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/27", "10.0.1.0/28")
	rng := rand.New(rand.NewSource(1))
	if err := s.Probe(); err != nil { // makes the network directory
		t.Fatal(err)
	}
	model := map[string]string{} // ip -> key
	holds := func(key string) []string {
		var out []string
		for ip, k := range model {
			if k == key {
				out = append(out, ip)
			}
		}
		sort.Strings(out)
		return out
	}
	for step := 0; step < 400; step++ {
		cid := fmt.Sprintf("c%d", rng.Intn(50))
		switch op := rng.Intn(10); {
		case op < 5:
			leases, err := s.Allocate(ctx, Request{ContainerID: cid, IfName: "eth0", Sets: []RangeSet{rs}})
			switch {
			case len(holds(Key(cid, "eth0"))) > 0:
				if err == nil {
					t.Fatalf("step %d: duplicate ADD of %s succeeded", step, cid)
				}
			case len(model) == 5+29+13-5: // nothing free (gateways and broadcasts excluded)
				if !errors.Is(err, ErrExhausted) {
					t.Fatalf("step %d: full set, got %v", step, err)
				}
			case err != nil:
				t.Fatalf("step %d: %v (model holds %d)", step, err, len(model))
			default:
				ip := leases[0].IP.String()
				if _, taken := model[ip]; taken {
					t.Fatalf("step %d: %s handed out twice", step, ip)
				}
				model[ip] = Key(cid, "eth0")
			}
		case op < 8:
			want := holds(Key(cid, "eth0"))
			if got := release(t, s, cid); !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
				t.Fatalf("step %d: release %s = %v, want %v", step, cid, got, want)
			}
			for _, ip := range want {
				delete(model, ip)
			}
		case op < 9: // another program reserves
			ip := fmt.Sprintf("10.0.0.%d", 2+rng.Intn(29))
			if _, taken := model[ip]; !taken {
				writeReservation(t, s, ip, "foreign-"+cid+"\r\neth0")
				model[ip] = Key("foreign-"+cid, "eth0")
			}
		default: // another program releases
			for ip := range model {
				os.Remove(filepath.Join(s.Dir(), ip))
				delete(model, ip)
				break
			}
		}
		if step%20 == 0 {
			if _, err := s.CheckIndex(ctx); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
	}
	checkIndex(t, s)
}

func TestLockTimeoutAndCancel(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.0.0.0/24")
	alloc(t, s, "a", rs)
	f, err := os.Open(filepath.Join(s.Dir(), "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	s.opts.LockTimeout = 50 * time.Millisecond
	if _, err := s.Allocate(ctx, Request{ContainerID: "b", IfName: "eth0", Sets: []RangeSet{rs}}); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("allocate under someone else's lock: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	s.opts.LockTimeout = time.Hour
	if _, err := s.Release(cctx, "a", "eth0"); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("release with a cancelled context: %v", err)
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if got := release(t, s, "a"); len(got) != 1 {
		t.Fatalf("a's address is gone: %v", got)
	}
}

func TestProbe(t *testing.T) {
	s := newStore(t)
	if err := s.Probe(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	for _, dir := range []string{file, filepath.Join(file, "sub"), "/proc/cnis-no-such-dir"} {
		if err := New(dir, "n", Options{}).Probe(); err == nil {
			t.Errorf("probe of data dir %s succeeded", dir)
		}
	}
}

// The bucket count follows the number of reservations: one file for a few, more as they grow
// (a rebuild at each doubling), DEL and CHECK right throughout.
func TestBucketsGrowWithReservations(t *testing.T) {
	s := newStore(t)
	rs := set(t, "10.1.0.0/16")
	stampBuckets := func() string {
		b, _ := os.ReadFile(filepath.Join(s.IndexDir(), "stamp"))
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "buckets ") {
				f := strings.Fields(l)
				return f[1] + "/" + f[2]
			}
		}
		return ""
	}
	for i := 0; i < 300; i++ {
		alloc(t, s, fmt.Sprintf("g%d", i), rs)
		switch i {
		case 0:
			if got := stampBuckets(); got != "1/1" {
				t.Fatalf("after 1 ADD: buckets/count %s, want 1/1", got)
			}
		case 200:
			if got := stampBuckets(); got != "2/201" {
				t.Fatalf("after 201 ADDs: buckets/count %s, want 2/201", got)
			}
		}
	}
	if got := stampBuckets(); got != "4/300" {
		t.Fatalf("after 300 ADDs: buckets/count %s, want 4/300", got)
	}
	es, _ := os.ReadDir(filepath.Join(s.IndexDir(), "b"))
	if len(es) != 4 {
		t.Fatalf("%d bucket files, want 4", len(es))
	}
	checkIndex(t, s)
	for i := 0; i < 300; i += 7 {
		if got := release(t, s, fmt.Sprintf("g%d", i)); len(got) != 1 {
			t.Fatalf("release g%d = %v", i, got)
		}
	}
	checkIndex(t, s)
}
