package ipalloc

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The index lives in <dataDir>/.<network>.index, outside the network directory that the
// reference reads and GCs:
//
//	stamp     which state of the network directory the index describes (see indexStamp)
//	b/<NN>    bucket files: "<ip> <quoted owner key>" lines, bucket = hash(owner key)
//	u/<hex>   bitmap blocks of used addresses (blockSize addresses each)
//	tmp       a reservation being written, then linked into place
//
// The stamp is invalidated before the first change of an operation and written again after
// the last one, so an operation killed half way leaves no stamp and the next one rebuilds the index
// from the network directory, which stays the only truth.
//
// Changes made by another program (the reference host-local, an operator) are seen through the
// stamp: it records the network directory's device, inode, mtime and ctime (any entry created,
// removed or renamed moves them) and the content of every last_reserved_ip file (which the
// reference rewrites on every ADD). Since Linux 6.13 (multigrain timestamps on ext4, xfs,
// btrfs, tmpfs) a change right after our stat of the directory gets a distinct timestamp; on
// older kernels a foreign change landing within the same clock tick as our last one, and
// leaving every last_reserved_ip as it was, could go unseen until the next change or GC.
// Allocation never trusts the index alone: link(2) decides, and a set that looks full is
// checked against the directory.

const (
	stampMagic = "cni-suite-ipalloc-index 1"
	lastPrefix = "last_reserved_ip."
	lockName   = "lock"
)

type entry struct {
	ip  netip.Addr
	key string
}

// view is the index as one operation sees it: either loaded lazily from a fresh index (only
// the buckets and blocks it touches), or full, built by scanning the network directory.
type view struct {
	s       *Store
	full    bool
	buckets map[int][]string       // bucket -> lines
	blocks  map[netip.Addr]*bitmap // nil value: known to be all free
	dirtyB  map[int]bool
	dirtyU  map[netip.Addr]bool
	last    map[string]string // last_reserved_ip.* file name -> content
	occ     occupancy         // lazy views: which bucket files the stamp says exist
	nb      int               // number of buckets
	count   int               // number of reservations in the buckets
	empty   []netip.Addr      // reservation files without content (full views only)
	err     error             // the network directory could not be read
}

func newView(s *Store, full bool) *view {
	return &view{
		s: s, full: full, buckets: map[int][]string{}, blocks: map[netip.Addr]*bitmap{},
		dirtyB: map[int]bool{}, dirtyU: map[netip.Addr]bool{}, last: map[string]string{},
	}
}

// switchFull replaces a lazy view by a scan of the network directory (which already holds
// every change this operation made).
func (v *view) switchFull(why string) {
	if v.full {
		return
	}
	v.s.logf("rebuilding the index of network %q (%s)", v.s.network, why)
	nv, err := v.s.scan()
	if err != nil {
		v.err = err
		return
	}
	*v = *nv
}

// bucket returns the lines of a bucket file ("<ip> <quoted owner key>"), loading it when
// needed. Lines are parsed only when used: DEL and CHECK look for one key's lines by their
// suffix, so their cost does not grow with the other reservations in the bucket.
func (v *view) bucket(b int) []string {
	if ls, ok := v.buckets[b]; ok || v.full {
		return ls
	}
	data, err := readSmall(filepath.Join(v.s.idxDir, "b", bucketName(b)))
	if errors.Is(err, fs.ErrNotExist) && !v.occ.get(b) {
		v.buckets[b] = nil
		return nil
	}
	var ls []string
	switch {
	case err != nil:
	case !v.occ.get(b) && len(data) > 0:
		err = errors.New("entries in a bucket the stamp says is empty")
	case len(data) > 0:
		ls, err = splitBucket(data)
	}
	if err != nil {
		v.switchFull(fmt.Sprintf("bucket %s: %v", bucketName(b), err))
		return v.buckets[b]
	}
	v.buckets[b] = ls
	return ls
}

func entryLine(ip netip.Addr, key string) string { return ip.String() + " " + strconv.Quote(key) }

func parseLine(l string) (entry, error) {
	ipS, keyQ, ok := strings.Cut(l, " ")
	if !ok {
		return entry{}, fmt.Errorf("malformed line %q", l)
	}
	ip, err := netip.ParseAddr(ipS)
	if err != nil {
		return entry{}, err
	}
	key, err := strconv.Unquote(keyQ)
	if err != nil {
		return entry{}, fmt.Errorf("malformed key %q: %w", keyQ, err)
	}
	return entry{ip, key}, nil
}

// A bucket file is its lines then "#<crc32c of the lines>": a file cut short or edited is
// seen even though lines are only parsed when used.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func formatBucket(ls []string) []byte {
	if len(ls) == 0 {
		return nil
	}
	body := strings.Join(ls, "\n") + "\n"
	return []byte(fmt.Sprintf("%s#%08x\n", body, crc32.Checksum([]byte(body), castagnoli)))
}

func splitBucket(data []byte) ([]string, error) {
	const sumLen = len("#01234567\n")
	if len(data) < sumLen || data[len(data)-1] != '\n' {
		return nil, errors.New("truncated")
	}
	body, sum := data[:len(data)-sumLen], data[len(data)-sumLen:]
	want, err := strconv.ParseUint(string(sum[1:9]), 16, 32)
	if err != nil || sum[0] != '#' || uint32(want) != crc32.Checksum(body, castagnoli) {
		return nil, errors.New("checksum mismatch")
	}
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return nil, errors.New("malformed")
	}
	return strings.Split(string(body[:len(body)-1]), "\n"), nil
}

func (v *view) block(base netip.Addr) *bitmap {
	if bm, ok := v.blocks[base]; ok || v.full {
		return bm
	}
	data, err := readSmall(filepath.Join(v.s.idxDir, "u", blockName(base)))
	if errors.Is(err, fs.ErrNotExist) {
		v.blocks[base] = nil
		return nil
	}
	var bm *bitmap
	if err == nil {
		bm, err = unmarshalBitmap(data)
	}
	if err != nil {
		v.switchFull(fmt.Sprintf("block %s: %v", blockName(base), err))
		return v.blocks[base]
	}
	v.blocks[base] = bm
	return bm
}

// keyBucket returns the bucket of key and its lines.
func (v *view) keyBucket(key string) (int, []string) {
	nb := v.nb
	b := bucketOf(key, nb)
	ls := v.bucket(b)
	if v.nb != nb { // loading it failed: now a full view, maybe with another bucket count
		b = bucketOf(key, v.nb)
		ls = v.buckets[b]
	}
	return b, ls
}

// lookup lists the addresses the index gives to an owner key.
func (v *view) lookup(key string) []netip.Addr {
	suffix := " " + strconv.Quote(key)
	b, ls := v.keyBucket(key)
	var out []netip.Addr
	for _, l := range ls {
		if !strings.HasSuffix(l, suffix) {
			continue
		}
		ip, err := netip.ParseAddr(l[:len(l)-len(suffix)])
		if err != nil {
			if v.full {
				continue // cannot happen: a scan writes every line
			}
			v.switchFull(fmt.Sprintf("bucket %s: line %q: %v", bucketName(b), l, err))
			return v.lookup(key)
		}
		out = append(out, ip)
	}
	return out
}

func (v *view) setUsed(ip netip.Addr, used bool) {
	base, off := blockOf(ip)
	bm := v.block(base)
	if bm == nil {
		if !used {
			return
		}
		bm = new(bitmap)
		v.blocks[base] = bm
	}
	if bm.get(off) != used {
		bm.set(off, used)
		v.dirtyU[base] = true
	}
}

// add records that key holds ip.
func (v *view) add(ip netip.Addr, key string) {
	line := entryLine(ip, key)
	b, ls := v.keyBucket(key)
	if !slices.Contains(ls, line) {
		v.buckets[b] = append(ls, line)
		v.dirtyB[b] = true
		v.count++
	}
	v.setUsed(ip, true)
}

// remove forgets that key holds ip.
func (v *view) remove(ip netip.Addr, key string) {
	line := entryLine(ip, key)
	b, ls := v.keyBucket(key)
	if i := slices.Index(ls, line); i >= 0 {
		v.buckets[b] = slices.Delete(slices.Clone(ls), i, i+1)
		v.dirtyB[b] = true
		v.count--
	}
	v.setUsed(ip, false)
}

// entries parses every line of every loaded bucket (full views: all reservations).
func (v *view) entries() ([]entry, error) {
	var out []entry
	for b, ls := range v.buckets {
		for _, l := range ls {
			e, err := parseLine(l)
			if err != nil {
				return nil, fmt.Errorf("bucket %s: %w", bucketName(b), err)
			}
			out = append(out, e)
		}
	}
	return out, nil
}

// firstFree returns the first address in [from, to] that the index does not mark used and
// that ok accepts.
func (v *view) firstFree(from, to netip.Addr, ok func(netip.Addr) bool) (netip.Addr, bool) {
	toBase, toOff := blockOf(to)
	cur := from
	for {
		base, off := blockOf(cur)
		end := blockSize - 1
		if base == toBase {
			end = toOff
		}
		bm := v.block(base)
		for o := off; o <= end; o++ {
			if bm != nil {
				if o = bm.nextFreeBit(o, end); o < 0 {
					break
				}
			}
			if a := atOffset(base, o); ok(a) {
				return a, true
			}
		}
		if base == toBase {
			return netip.Addr{}, false
		}
		next, more := nextBlock(base)
		if !more {
			return netip.Addr{}, false
		}
		cur = next
	}
}

// scan builds a full view from the network directory: the reference's files are the truth.
func (s *Store) scan() (*view, error) {
	f, err := os.Open(s.netDir)
	if err != nil {
		return nil, fmt.Errorf("read network directory: %w", err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("read network directory %s: %w", s.netDir, err)
	}
	v := newView(s, true)
	var found []entry
	for _, name := range names {
		if name == lockName {
			continue
		}
		if strings.HasPrefix(name, lastPrefix) {
			if data, err := readSmall(filepath.Join(s.netDir, name)); err == nil {
				v.last[name] = string(data)
			}
			continue
		}
		ip, ok := reservationName(name)
		if !ok {
			continue
		}
		data, err := readSmall(filepath.Join(s.netDir, name))
		if err != nil {
			continue // gone meanwhile, or not a regular file
		}
		key := strings.TrimSpace(string(data))
		if key == "" {
			v.empty = append(v.empty, ip)
			continue
		}
		found = append(found, entry{ip, key})
	}
	v.nb, v.count = bucketsFor(len(found)), len(found)
	for _, e := range found { // file names are unique: no need for add's duplicate check
		b := bucketOf(e.key, v.nb)
		v.buckets[b] = append(v.buckets[b], entryLine(e.ip, e.key))
		v.setUsed(e.ip, true)
	}
	return v, nil
}

// reservationName parses a file name of the network directory as a reservation: an address
// written the way the reference writes it.
func reservationName(name string) (netip.Addr, bool) {
	ip, err := netip.ParseAddr(name)
	if err != nil || ip.Zone() != "" || ip.Is4In6() || ip.String() != name {
		return netip.Addr{}, false
	}
	return ip, true
}

// indexStamp ties the index to one state of the network directory.
type indexStamp struct {
	boot string
	dir  dirStamp
	last map[string]string
	occ  occupancy // non-empty buckets: a bucket file gone missing is seen
	nb   int       // number of buckets
	n    int       // number of reservations
}

// occupancy is one bit per bucket.
type occupancy [occupancyWords]uint64

func (o *occupancy) get(b int) bool { return o[b/64]>>(b%64)&1 == 1 }

func (o *occupancy) set(b int, v bool) {
	if v {
		o[b/64] |= 1 << (b % 64)
	} else {
		o[b/64] &^= 1 << (b % 64)
	}
}

func (st *indexStamp) marshal() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nboot %s\ndir %d %d %d %d %d %d\n", stampMagic, st.boot,
		st.dir.Dev, st.dir.Ino, st.dir.MtimeS, st.dir.MtimeN, st.dir.CtimeS, st.dir.CtimeN)
	names := make([]string, 0, len(st.last))
	for n := range st.last {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "last %s %s\n", strconv.Quote(n), strconv.Quote(st.last[n]))
	}
	fmt.Fprintf(&b, "buckets %d %d", st.nb, st.n)
	for _, w := range st.occ {
		fmt.Fprintf(&b, " %x", w)
	}
	b.WriteString("\nend\n")
	return b.Bytes()
}

func parseStamp(data []byte) (*indexStamp, error) {
	body, _, complete := strings.Cut(string(data), "\nend\n")
	lines := append(strings.Split(body, "\n"), "end", "")
	if !complete || len(lines) < 4 || lines[0] != stampMagic {
		return nil, errors.New("not a complete index stamp")
	}
	st := &indexStamp{last: map[string]string{}}
	hasOcc := false
	for _, l := range lines[1 : len(lines)-2] {
		kind, rest, _ := strings.Cut(l, " ")
		switch kind {
		case "boot":
			st.boot = rest
		case "dir":
			d := &st.dir
			if _, err := fmt.Sscanf(rest, "%d %d %d %d %d %d", &d.Dev, &d.Ino, &d.MtimeS, &d.MtimeN, &d.CtimeS, &d.CtimeN); err != nil {
				return nil, fmt.Errorf("dir line: %w", err)
			}
		case "buckets":
			ws := strings.Fields(rest)
			if len(ws) != 2+len(st.occ) {
				return nil, errors.New("malformed buckets line")
			}
			nb, err1 := strconv.Atoi(ws[0])
			n, err2 := strconv.Atoi(ws[1])
			if err1 != nil || err2 != nil || nb < 1 || nb > maxBuckets || nb&(nb-1) != 0 || n < 0 {
				return nil, errors.New("malformed buckets line")
			}
			st.nb, st.n = nb, n
			for i, w := range ws[2:] {
				n, err := strconv.ParseUint(w, 16, 64)
				if err != nil {
					return nil, fmt.Errorf("buckets line: %w", err)
				}
				st.occ[i] = n
			}
			hasOcc = true
		case "last":
			nq, cq, _ := strings.Cut(rest, " ")
			n, err1 := strconv.Unquote(nq)
			c, err2 := strconv.Unquote(cq)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("malformed line %q", l)
			}
			st.last[n] = c
		default:
			return nil, fmt.Errorf("unknown line %q", l)
		}
	}
	if !hasOcc {
		return nil, errors.New("stamp without buckets line")
	}
	return st, nil
}

// loadFresh returns a lazy view when the index describes the network directory as it is now,
// or nil and the reason it does not.
func (s *Store) loadFresh() (*view, string) {
	data, err := readSmall(filepath.Join(s.idxDir, "stamp"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, ""
		}
		return nil, err.Error()
	}
	st, err := parseStamp(data)
	if err != nil {
		return nil, err.Error()
	}
	if st.boot != currentBootID() {
		return nil, "written before the last boot"
	}
	cur, err := statDir(s.netDir)
	if err != nil {
		return nil, err.Error()
	}
	if cur != st.dir {
		return nil, "network directory changed by another program"
	}
	// A reference ADD always rewrites last_reserved_ip.<set>: a change there is seen even when
	// the directory's timestamps are too coarse to show it.
	for name, want := range st.last {
		got, err := readSmall(filepath.Join(s.netDir, name))
		if err != nil || string(got) != want {
			return nil, name + " changed by another program"
		}
	}
	v := newView(s, false)
	v.last = st.last
	v.occ, v.nb, v.count = st.occ, st.nb, st.n
	return v, ""
}

// persist writes what the operation changed in the index, then the stamp.
func (s *Store) persist(v *view) error {
	if !s.idxOK || (!s.dirty && !v.full) || v.err != nil {
		return nil
	}
	if !v.full && bucketsFor(v.count) > v.nb {
		v.switchFull(fmt.Sprintf("%d reservations outgrow %d buckets", v.count, v.nb))
		if v.err != nil {
			return v.err
		}
	}
	s.beginWrite()
	if v.full {
		for _, sub := range []string{"b", "u"} {
			if err := os.Mkdir(filepath.Join(s.idxDir, sub), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		}
	}
	buckets, blocks := v.dirtyB, v.dirtyU
	if v.full {
		// Everything is rewritten; files of the old index that the scan did not produce are
		// emptied (kept: a new file costs an inode allocation), junk is removed.
		buckets, blocks = map[int]bool{}, map[netip.Addr]bool{}
		for b := range v.buckets {
			buckets[b] = true
		}
		for base := range v.blocks {
			blocks[base] = true
		}
		if err := s.sweepIndex("b", func(n string) bool {
			b, err := strconv.ParseUint(n, 16, 32)
			if err != nil || b >= maxBuckets || n != bucketName(int(b)) {
				return false
			}
			buckets[int(b)] = true
			return true
		}); err != nil {
			return err
		}
		if err := s.sweepIndex("u", func(n string) bool {
			base, ok := parseBlockName(n)
			if ok {
				blocks[base] = true
			}
			return ok
		}); err != nil {
			return err
		}
	}
	occ := v.occ
	if v.full {
		occ = occupancy{}
	}
	for b := range buckets {
		ls := v.buckets[b]
		occ.set(b, len(ls) > 0)
		if err := s.indexWrite(filepath.Join(s.idxDir, "b", bucketName(b)), formatBucket(ls)); err != nil {
			return err
		}
		failpoint("index-bucket-written")
	}
	for base := range blocks {
		bm := v.blocks[base]
		if bm == nil {
			bm = new(bitmap)
		}
		if err := s.indexWrite(filepath.Join(s.idxDir, "u", blockName(base)), bm.marshal()); err != nil {
			return err
		}
	}
	failpoint("index-written")
	dir, err := statDir(s.netDir)
	if err != nil {
		return err
	}
	st := indexStamp{boot: currentBootID(), dir: dir, last: v.last, occ: occ, nb: v.nb, n: v.count}
	if err := writeStamp(filepath.Join(s.idxDir, "stamp"), st.marshal()); err != nil {
		return err
	}
	failpoint("stamp-written")
	s.dirty = false
	return nil
}

// indexWrite writes an index file in place, making its directory when missing.
func (s *Store) indexWrite(path string, data []byte) error {
	err := writeInPlace(path, data, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.Mkdir(filepath.Dir(path), 0o700); err == nil || errors.Is(err, fs.ErrExist) {
			err = writeInPlace(path, data, 0o600)
		}
	}
	return err
}

// The stamp is written in place (no inode allocation per operation): invalidated by
// overwriting its first byte, made valid again by writing everything but the first byte, then
// the first byte. A process killed in between leaves an invalid stamp. Its length is rounded
// up (padding after "end") so that it rarely changes.
const stampBad = 'X'

func invalidateStamp(path string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	err = pwriteAll(fd, []byte{stampBad}, 0)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func writeStamp(path string, content []byte) error {
	padded := make([]byte, (len(content)+1023)/1024*1024)
	copy(padded, content)
	for i := len(content); i < len(padded); i++ {
		padded[i] = ' '
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	err = pwriteAll(fd, padded[1:], 1)
	if err == nil {
		err = unix.Ftruncate(fd, int64(len(padded)))
	}
	if err == nil {
		err = pwriteAll(fd, padded[:1], 0)
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

// sweepIndex lists an index subdirectory, calling keep for each name; names it rejects are
// removed.
func (s *Store) sweepIndex(sub string, keep func(string) bool) error {
	f, err := os.Open(filepath.Join(s.idxDir, sub))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if !keep(n) {
			if err := os.RemoveAll(filepath.Join(s.idxDir, sub, n)); err != nil {
				return err
			}
		}
	}
	return nil
}
