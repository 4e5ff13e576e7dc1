package ipalloc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The index lives in <dataDir>/.<network>.index, outside the network directory that the
// reference reads and GCs:
//
//	stamp     which state of the network directory the index describes (see indexStamp)
//	b/<NN>    bucket files: "<ip> <quoted owner key>" lines, bucket = hash(owner key)
//	u/<hex>   bitmap blocks of used addresses (blockSize addresses each)
//	tmp       a reservation being written, linked into place
//	tmp-last  a last_reserved_ip file being written, renamed into place
//
// The stamp is removed before the first change of an operation and written again after the
// last one, so an operation killed half way leaves no stamp and the next one rebuilds the index
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
	buckets map[int][]entry
	blocks  map[netip.Addr]*bitmap // nil value: known to be all free
	dirtyB  map[int]bool
	dirtyU  map[netip.Addr]bool
	last    map[string]string // last_reserved_ip.* file name -> content
	occ     occupancy         // lazy views: which bucket files the stamp says exist
	empty   []netip.Addr      // reservation files without content (full views only)
	err     error             // the network directory could not be read
}

func newView(s *Store, full bool) *view {
	return &view{
		s: s, full: full, buckets: map[int][]entry{}, blocks: map[netip.Addr]*bitmap{},
		dirtyB: map[int]bool{}, dirtyU: map[netip.Addr]bool{}, last: map[string]string{},
	}
}

// switchFull replaces a lazy view by a scan of the network directory (which already holds
// every change this operation made).
func (v *view) switchFull(why string) {
	if v.full {
		return
	}
	v.s.logf("index of network %q unusable (%s): rebuilding it", v.s.network, why)
	nv, err := v.s.scan()
	if err != nil {
		v.err = err
		return
	}
	*v = *nv
}

func (v *view) bucket(b int) []entry {
	if es, ok := v.buckets[b]; ok || v.full {
		return es
	}
	data, err := readSmall(filepath.Join(v.s.idxDir, "b", bucketName(b)))
	if errors.Is(err, fs.ErrNotExist) && !v.occ.get(b) {
		v.buckets[b] = nil
		return nil
	}
	var es []entry
	switch {
	case err != nil:
	case !v.occ.get(b):
		err = errors.New("bucket file the stamp does not list")
	default:
		es, err = parseBucket(data)
	}
	if err != nil {
		v.switchFull(fmt.Sprintf("bucket %s: %v", bucketName(b), err))
		return v.buckets[b]
	}
	v.buckets[b] = es
	return es
}

func parseBucket(data []byte) ([]entry, error) {
	var es []entry
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		ipS, keyQ, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return nil, fmt.Errorf("malformed line %q", sc.Text())
		}
		ip, err := netip.ParseAddr(ipS)
		if err != nil {
			return nil, err
		}
		key, err := strconv.Unquote(keyQ)
		if err != nil {
			return nil, fmt.Errorf("malformed key %q: %w", keyQ, err)
		}
		es = append(es, entry{ip, key})
	}
	return es, sc.Err()
}

func formatBucket(es []entry) []byte {
	var b bytes.Buffer
	for _, e := range es {
		b.WriteString(e.ip.String())
		b.WriteByte(' ')
		b.WriteString(strconv.Quote(e.key))
		b.WriteByte('\n')
	}
	return b.Bytes()
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

// lookup lists the addresses the index gives to an owner key.
func (v *view) lookup(key string) []netip.Addr {
	var out []netip.Addr
	for _, e := range v.bucket(bucketOf(key)) {
		if e.key == key {
			out = append(out, e.ip)
		}
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
	b := bucketOf(key)
	es := v.bucket(b)
	if !slices.Contains(es, entry{ip, key}) {
		v.buckets[b] = append(es, entry{ip, key})
		v.dirtyB[b] = true
	}
	v.setUsed(ip, true)
}

// remove forgets that key holds ip.
func (v *view) remove(ip netip.Addr, key string) {
	b := bucketOf(key)
	es := v.bucket(b)
	if i := slices.Index(es, entry{ip, key}); i >= 0 {
		v.buckets[b] = slices.Delete(slices.Clone(es), i, i+1)
		v.dirtyB[b] = true
	}
	v.setUsed(ip, false)
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
		b := bucketOf(key) // file names are unique: no need for add's duplicate check
		v.buckets[b] = append(v.buckets[b], entry{ip, key})
		v.setUsed(ip, true)
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
}

// occupancy is one bit per bucket.
type occupancy [bucketCount / 64]uint64

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
	b.WriteString("buckets")
	for _, w := range st.occ {
		fmt.Fprintf(&b, " %x", w)
	}
	b.WriteString("\nend\n")
	return b.Bytes()
}

func parseStamp(data []byte) (*indexStamp, error) {
	lines := strings.Split(string(data), "\n")
	if len(lines) < 4 || lines[0] != stampMagic || lines[len(lines)-1] != "" || lines[len(lines)-2] != "end" {
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
			if len(ws) != len(st.occ) {
				return nil, errors.New("malformed buckets line")
			}
			for i, w := range ws {
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
	v.occ = st.occ
	return v, ""
}

// persist writes what the operation changed in the index, then the stamp.
func (s *Store) persist(v *view) error {
	if !s.idxOK || (!s.dirty && !v.full) || v.err != nil {
		return nil
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
		// Everything is rewritten; files of the old index that the scan did not produce go.
		buckets, blocks = map[int]bool{}, map[netip.Addr]bool{}
		for b := range v.buckets {
			buckets[b] = true
		}
		for base := range v.blocks {
			blocks[base] = true
		}
		if err := s.removeStale("b", func(n string) bool {
			b, err := strconv.ParseUint(n, 16, 32)
			return err == nil && n == bucketName(int(b)) && len(v.buckets[int(b)]) > 0
		}); err != nil {
			return err
		}
		if err := s.removeStale("u", func(n string) bool {
			base, ok := parseBlockName(n)
			return ok && v.blocks[base] != nil && !v.blocks[base].empty()
		}); err != nil {
			return err
		}
	}
	occ := v.occ
	if v.full {
		occ = occupancy{}
	}
	for b := range buckets {
		p := filepath.Join(s.idxDir, "b", bucketName(b))
		var err error
		occ.set(b, len(v.buckets[b]) > 0)
		if es := v.buckets[b]; len(es) == 0 {
			err = unlinkIfExists(p)
		} else {
			err = s.indexWrite(replaceFile, p, formatBucket(es))
		}
		if err != nil {
			return err
		}
		failpoint("index-bucket-written")
	}
	for base := range blocks {
		p := filepath.Join(s.idxDir, "u", blockName(base))
		var err error
		if bm := v.blocks[base]; bm == nil || bm.empty() {
			err = unlinkIfExists(p)
		} else {
			err = s.indexWrite(overwriteFile, p, bm.marshal())
		}
		if err != nil {
			return err
		}
	}
	failpoint("index-written")
	dir, err := statDir(s.netDir)
	if err != nil {
		return err
	}
	st := indexStamp{boot: currentBootID(), dir: dir, last: v.last, occ: occ}
	// beginWrite removed the stamp: this creates a new file.
	if err := writeFile(filepath.Join(s.idxDir, "stamp"), st.marshal(), 0o600); err != nil {
		return err
	}
	failpoint("stamp-written")
	s.dirty = false
	return nil
}

// indexWrite writes an index file with write, making its directory when missing.
func (s *Store) indexWrite(write func(string, []byte, uint32) error, path string, data []byte) error {
	err := write(path, data, 0o600)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.Mkdir(filepath.Dir(path), 0o700); err == nil || errors.Is(err, fs.ErrExist) {
			err = write(path, data, 0o600)
		}
	}
	return err
}

func (s *Store) removeStale(sub string, keep func(string) bool) error {
	f, err := os.Open(filepath.Join(s.idxDir, sub))
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
