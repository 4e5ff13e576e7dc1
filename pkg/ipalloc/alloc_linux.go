package ipalloc

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrExhausted is wrapped by the error of an allocation from a full range set.
var ErrExhausted = errors.New("no free address")

// Request asks for one address per range set for an attachment.
type Request struct {
	ContainerID, IfName string
	Sets                []RangeSet
	// Requested holds, per set, the address asked for; the zero Addr lets the allocator pick.
	// Each requested address must lie in its set (the caller checks it with RangeFor).
	Requested []netip.Addr
}

// Lease is one allocated address.
type Lease struct {
	Set   int        // index of the range set
	Range Range      // the range it came from (subnet, gateway)
	IP    netip.Addr // the address
}

// Prefix is the address with its subnet's prefix length.
func (l Lease) Prefix() netip.Prefix { return netip.PrefixFrom(l.IP, l.Range.Subnet.Bits()) }

// Allocate reserves one address in each set for the attachment, all or nothing: requested
// addresses when given, else the next free address after last_reserved_ip.<set> (round robin,
// wrapping, so that a just freed address is not reused at once).
func (s *Store) Allocate(ctx context.Context, req Request) ([]Lease, error) {
	key := Key(req.ContainerID, req.IfName)
	var leases []Lease
	err := s.do(ctx, true, false, func(v *view) (err error) {
		defer func() {
			if err == nil {
				return
			}
			for _, l := range leases { // roll back this ADD's reservations
				if rerr := unlinkIfExists(s.ipPath(l.IP)); rerr != nil {
					err = errors.Join(err, rerr)
					continue
				}
				v.remove(l.IP, key)
			}
			leases = nil
		}()
		for i, set := range req.Sets {
			var want netip.Addr
			if i < len(req.Requested) {
				want = req.Requested[i]
			}
			var l Lease
			if want.IsValid() {
				l, err = s.allocRequested(v, i, set, want, key)
			} else {
				l, err = s.allocNext(v, i, set, req.ContainerID, key)
			}
			if err != nil {
				return err
			}
			leases = append(leases, l)
			if err := s.writeLast(v, i, l.IP); err != nil {
				return err
			}
		}
		return nil
	})
	return leases, err
}

func (s *Store) allocRequested(v *view, i int, set RangeSet, ip netip.Addr, key string) (Lease, error) {
	r := set.RangeFor(ip)
	if r == nil {
		return Lease{}, fmt.Errorf("requested IP address %s is not in range set %d (%s)", ip, i, set)
	}
	if !r.Allocatable(ip) {
		what := "network"
		switch {
		case ip == r.Gateway:
			what = "gateway"
		case ip != r.Subnet.Addr():
			what = "broadcast"
		}
		return Lease{}, fmt.Errorf("requested IP address %s is the %s address of subnet %s", ip, what, r.Subnet)
	}
	ok, err := s.reserve(v, ip, key)
	if err != nil {
		return Lease{}, err
	}
	if !ok {
		return Lease{}, fmt.Errorf("requested IP address %s is not available in range set %d (%s)", ip, i, set)
	}
	return Lease{Set: i, Range: *r, IP: ip}, nil
}

type segment struct {
	r        *Range
	from, to netip.Addr
}

// segments is the round-robin order of a set: after last to the end of its range, the
// following ranges, the preceding ones, then the start of last's range up to last itself.
func segments(set RangeSet, last netip.Addr) []segment {
	k := -1
	if last.IsValid() {
		for i := range set {
			if set[i].Contains(last) {
				k = i
				break
			}
		}
	}
	var out []segment
	if k < 0 {
		for i := range set {
			out = append(out, segment{&set[i], set[i].Start, set[i].End})
		}
		return out
	}
	r := &set[k]
	if last != r.End {
		out = append(out, segment{r, last.Next(), r.End})
	}
	for j := 1; j < len(set); j++ {
		o := &set[(k+j)%len(set)]
		out = append(out, segment{o, o.Start, o.End})
	}
	return append(out, segment{r, r.Start, last})
}

func (s *Store) allocNext(v *view, i int, set RangeSet, containerID, key string) (Lease, error) {
	// One address per set per attachment, as the reference (a repeated ADD is an error).
	held, err := s.owned(v, key)
	if err != nil {
		return Lease{}, err
	}
	for _, ip := range held {
		if set.Contains(ip) {
			return Lease{}, fmt.Errorf("%s has been allocated to %s, duplicate allocation is not allowed", ip, containerID)
		}
	}
	var last netip.Addr
	if c, ok := v.last[lastName(i)]; ok {
		last, _ = ParseAddr(strings.TrimSpace(c))
	}
	segs := segments(set, last)
	for pass := 0; pass < 2; pass++ {
		for _, sg := range segs {
			from := sg.from
			for {
				ip, ok := v.firstFree(from, sg.to, sg.r.Allocatable)
				if v.err != nil {
					return Lease{}, v.err
				}
				if !ok {
					break
				}
				got, err := s.reserve(v, ip, key)
				if err != nil {
					return Lease{}, err
				}
				if got {
					return Lease{Set: i, Range: *sg.r, IP: ip}, nil
				}
				if ip == sg.to {
					break
				}
				from = ip.Next()
			}
		}
		if v.full {
			break
		}
		// The index says the set is full: make sure against the directory itself.
		v.switchFull("range set looks full")
	}
	s.logf("range set %d (%s) of network %q is full", i, set.Subnets(), s.network)
	return Lease{}, fmt.Errorf("%w in range set %d (subnets %s, range %s)", ErrExhausted, i, set.Subnets(), set)
}

// Release frees every address the attachment holds (or, when it holds none, those of
// reservations written by old reference versions with the container ID alone). Releasing
// an unknown attachment, or in a network that does not exist, succeeds.
func (s *Store) Release(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := s.do(ctx, false, false, func(v *view) error {
		ips, key, err := s.ownedOrLegacy(v, containerID, ifName)
		if err != nil {
			return err
		}
		var errs []error
		for _, ip := range ips {
			s.beginWrite()
			if err := unlinkIfExists(s.ipPath(ip)); err != nil {
				errs = append(errs, err)
				continue
			}
			v.remove(ip, key)
			out = append(out, ip)
		}
		return errors.Join(errs...)
	})
	if errors.Is(err, errNoNetwork) {
		return nil, nil
	}
	return out, err
}

// Lookup lists the addresses the attachment holds (or legacy reservations of the container).
func (s *Store) Lookup(ctx context.Context, containerID, ifName string) ([]netip.Addr, error) {
	var out []netip.Addr
	err := s.do(ctx, false, false, func(v *view) error {
		ips, _, err := s.ownedOrLegacy(v, containerID, ifName)
		out = ips
		return err
	})
	if errors.Is(err, errNoNetwork) {
		return nil, nil
	}
	return out, err
}

// Holder returns the owner key of ip's reservation file ("" and false when free), read from
// the file itself under the lock.
func (s *Store) Holder(ctx context.Context, ip netip.Addr) (string, bool, error) {
	var key string
	var found bool
	err := s.do(ctx, false, false, func(*view) error {
		var err error
		key, found, err = s.holder(ip)
		return err
	})
	if errors.Is(err, errNoNetwork) {
		return "", false, nil
	}
	return key, found, err
}

// GC releases every reservation whose attachment is not in valid (legacy reservations are
// kept when their container ID is in valid), and every empty reservation file. It reads the
// whole network directory, rebuilds the index, and keeps going on errors.
func (s *Store) GC(ctx context.Context, valid []Attachment) ([]netip.Addr, error) {
	exact := map[string]bool{}
	legacy := map[string]bool{}
	for _, a := range valid {
		exact[Key(a.ContainerID, a.IfName)] = true
		legacy[strings.TrimSpace(a.ContainerID)] = true
	}
	var out []netip.Addr
	err := s.do(ctx, false, true, func(v *view) error {
		all, err := v.entries()
		if err != nil {
			return err // cannot happen: a scan writes every line
		}
		var errs []error
		var stale []entry
		for _, e := range all {
			if exact[e.key] || !strings.Contains(e.key, "\r\n") && legacy[e.key] {
				continue
			}
			stale = append(stale, e)
		}
		for _, e := range stale {
			s.beginWrite()
			if err := unlinkIfExists(s.ipPath(e.ip)); err != nil {
				errs = append(errs, err)
				continue
			}
			v.remove(e.ip, e.key)
			out = append(out, e.ip)
		}
		for _, ip := range v.empty {
			s.beginWrite()
			if err := unlinkIfExists(s.ipPath(ip)); err != nil {
				errs = append(errs, err)
			}
		}
		if s.idxOK {
			for _, n := range []string{"tmp"} { // a leftover of a killed ADD
				if err := unlinkIfExists(filepath.Join(s.idxDir, n)); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	})
	if errors.Is(err, errNoNetwork) {
		return nil, nil
	}
	return out, err
}

// Probe checks that the store can serve an ADD: the network directory exists or can be made,
// its lock file opens, and the file system is writable with space and inodes left. It changes
// nothing but making the directories and the lock file, as a first ADD would.
func (s *Store) Probe() error {
	if err := s.mkdirNet(); err != nil {
		return err
	}
	fd, err := unix.Open(filepath.Join(s.netDir, lockName), unix.O_RDONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o750)
	if err != nil {
		return fmt.Errorf("open lock file in %s: %w", s.netDir, err)
	}
	unix.Close(fd)
	if err := unix.Access(s.netDir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Errorf("network directory %s is not writable: %w", s.netDir, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.netDir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", s.netDir, err)
	}
	if st.Bfree == 0 {
		return fmt.Errorf("no space left on the file system of %s", s.netDir)
	}
	if st.Files > 0 && st.Ffree == 0 {
		return fmt.Errorf("no inodes left on the file system of %s", s.netDir)
	}
	return nil
}

// CheckIndex compares the persisted index with the network directory. fresh tells whether
// the index describes the directory as it is (else the next operation rebuilds it); the error
// names the first difference when a fresh index disagrees with the reservations. For tests and
// fsck; it leaves a rebuilt index behind.
func (s *Store) CheckIndex(ctx context.Context) (fresh bool, err error) {
	err = s.do(ctx, false, true, func(truth *view) error {
		if !s.idxOK {
			return nil
		}
		idx, _ := s.loadFresh()
		if idx == nil {
			return nil
		}
		fresh = true
		var got []string
		for b := 0; b < idx.nb; b++ {
			got = append(got, idx.bucket(b)...)
		}
		if idx.full {
			return errors.New("index has unreadable files")
		}
		var want []string
		for _, ls := range truth.buckets {
			want = append(want, ls...)
		}
		for _, l := range got {
			if _, err := parseLine(l); err != nil {
				return err
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			return fmt.Errorf("index holds %q, directory %q", got, want)
		}
		if idx.count != truth.count {
			return fmt.Errorf("index counts %d reservations, directory holds %d", idx.count, truth.count)
		}
		for base, bm := range truth.blocks {
			got := idx.block(base)
			if got == nil {
				got = new(bitmap)
			}
			if bm == nil {
				bm = new(bitmap)
			}
			if *got != *bm {
				return fmt.Errorf("used-address block %s differs from the directory", blockName(base))
			}
		}
		f, err := os.Open(filepath.Join(s.idxDir, "u"))
		if err == nil {
			names, _ := f.Readdirnames(-1)
			f.Close()
			for _, n := range names {
				base, ok := parseBlockName(n)
				if !ok || truth.blocks[base] == nil {
					if bm := idx.block(base); ok && bm != nil && !bm.empty() {
						return fmt.Errorf("index marks addresses of block %s used, directory holds none", n)
					}
				}
			}
		}
		return nil
	})
	if errors.Is(err, errNoNetwork) {
		return false, nil
	}
	return fresh, err
}
