package ipalloc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDataDir is where the reference keeps its reservations.
const DefaultDataDir = "/var/lib/cni/networks"

// DefaultLockTimeout bounds the wait for a network's lock.
const DefaultLockTimeout = 60 * time.Second

// Options tune a Store.
type Options struct {
	LockTimeout time.Duration                 // 0: DefaultLockTimeout
	Logf        func(format string, a ...any) // diagnostics (index rebuilds, reclaimed debris); nil: none
}

// Store is the reservations of one network under a data dir, in the reference's layout:
//
//	<dataDir>/<network>/<ip>                  "<containerID>\r\n<ifname>", mode 0600
//	<dataDir>/<network>/last_reserved_ip.<n>  last address handed out from range set n
//	<dataDir>/<network>/lock                  flock'ed around every operation
//
// plus an index in <dataDir>/.<network>.index (see index_linux.go). A Store is used by one
// goroutine at a time; each method takes the lock for its whole duration.
type Store struct {
	dataDir, network string
	netDir, idxDir   string
	opts             Options
	dirty            bool // the stamp was invalidated in this operation
	idxOK            bool // the index directory is usable in this operation
}

// Attachment is a (container ID, interface name) pair, as in cni.dev/valid-attachments.
type Attachment struct {
	ContainerID, IfName string
}

// Key is the content of a reservation file for an attachment, as the reference writes it.
func Key(containerID, ifName string) string {
	return strings.TrimSpace(containerID) + "\r\n" + ifName
}

// New returns the store of network under dataDir ("" means DefaultDataDir). It does no I/O.
func New(dataDir, network string, opts Options) *Store {
	if dataDir == "" {
		dataDir = DefaultDataDir
	}
	if opts.LockTimeout == 0 {
		opts.LockTimeout = DefaultLockTimeout
	}
	return &Store{
		dataDir: dataDir, network: network, opts: opts,
		netDir: filepath.Join(dataDir, network),
		idxDir: filepath.Join(dataDir, "."+network+".index"),
	}
}

// Dir is the network directory.
func (s *Store) Dir() string { return s.netDir }

// IndexDir is the index directory (outside the network directory).
func (s *Store) IndexDir() string { return s.idxDir }

func (s *Store) logf(format string, a ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf(format, a...)
	}
}

func (s *Store) ipPath(ip netip.Addr) string { return filepath.Join(s.netDir, ip.String()) }

var errNoNetwork = errors.New("network directory does not exist")

// mkdirNet makes the network directory 0755 (and the data dir), as the reference does.
func (s *Store) mkdirNet() error {
	err := os.Mkdir(s.netDir, 0o755)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(s.dataDir, 0o755); err == nil {
			err = os.Mkdir(s.netDir, 0o755)
		}
	}
	if err == nil {
		return os.Chmod(s.netDir, 0o755) // whatever the umask
	}
	if errors.Is(err, fs.ErrExist) {
		if st, serr := os.Stat(s.netDir); serr == nil && st.IsDir() {
			return nil
		}
	}
	return fmt.Errorf("create network directory: %w", err)
}

// do runs fn on the network's index view under the network's lock. create makes the network
// directory when missing; otherwise a missing directory is errNoNetwork. scan ignores the
// index and reads the whole directory.
func (s *Store) do(ctx context.Context, create, scan bool, fn func(v *view) error) error {
	lockPath := filepath.Join(s.netDir, lockName)
	fd, err := unix.Open(lockPath, unix.O_RDONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o750)
	if errors.Is(err, unix.ENOENT) {
		if !create {
			return errNoNetwork
		}
		if err := s.mkdirNet(); err != nil {
			return err
		}
		fd, err = unix.Open(lockPath, unix.O_RDONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o750)
	}
	if err != nil {
		return fmt.Errorf("open lock file in %s: %w", s.netDir, err)
	}
	defer unix.Close(fd)
	if err := flock(ctx, fd, s.opts.LockTimeout); err != nil {
		return fmt.Errorf("lock network %q: %w", s.network, err)
	}
	defer unix.Flock(fd, unix.LOCK_UN) //nolint:errcheck // closing releases it anyway
	failpoint("locked")
	s.dirty = false
	s.idxOK = s.ensureIndexDir()
	var v *view
	if !scan && s.idxOK {
		var why string
		if v, why = s.loadFresh(); v == nil && why != "" {
			s.logf("index of network %q is stale (%s): rebuilding it", s.network, why)
		}
	}
	if v == nil {
		if v, err = s.scan(); err != nil {
			return err
		}
	}
	ferr := fn(v)
	if v.err != nil {
		return errors.Join(ferr, v.err)
	}
	if err := s.persist(v); err != nil {
		// The index is an optimisation: without a stamp the next operation rebuilds it.
		s.logf("write index of network %q: %v", s.network, err)
	}
	return ferr
}

func (s *Store) ensureIndexDir() bool {
	var st unix.Stat_t
	err := unix.Stat(s.idxDir, &st)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return true
	}
	if errors.Is(err, unix.ENOENT) {
		if err = os.Mkdir(s.idxDir, 0o700); err == nil {
			return true
		}
	}
	if err == nil {
		err = errors.New("not a directory")
	}
	s.logf("index directory %s unusable (%v): working from the network directory alone", s.idxDir, err)
	return false
}

// beginWrite invalidates the index stamp before the operation's first change.
func (s *Store) beginWrite() {
	if s.dirty || !s.idxOK {
		return
	}
	s.dirty = true
	if err := invalidateStamp(filepath.Join(s.idxDir, "stamp")); err != nil {
		s.logf("invalidate index: %v", err)
		s.idxOK = false
	}
	failpoint("index-invalidated")
}

// createReservation makes the reservation file at path holding content, never half written:
// the content goes to a temporary file outside the network directory, which is then linked
// into place (link(2) fails when the address is taken). False when taken.
func (s *Store) createReservation(path string, content []byte) (bool, error) {
	if s.idxOK {
		tmp := filepath.Join(s.idxDir, "tmp")
		// Never open a leftover tmp: after a crash between link and unlink it is the
		// reservation itself.
		if err := unlinkIfExists(tmp); err != nil {
			return false, err
		}
		fd, err := unix.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
		ok := err == nil
		if ok {
			failpoint("tmp-created")
			err = writeAll(fd, content)
			if cerr := unix.Close(fd); err == nil {
				err = cerr
			}
			if err != nil {
				_ = unix.Unlink(tmp)
				return false, &os.PathError{Op: "write", Path: tmp, Err: err}
			}
		}
		if ok {
			failpoint("tmp-written")
			lerr := unix.Link(tmp, path)
			if lerr == nil {
				failpoint("linked")
			}
			_ = unix.Unlink(tmp)
			failpoint("tmp-removed")
			switch {
			case lerr == nil:
				return true, nil
			case errors.Is(lerr, unix.EEXIST):
				return false, nil
			case !errors.Is(lerr, unix.EXDEV) && !errors.Is(lerr, unix.EPERM) && !errors.Is(lerr, unix.EOPNOTSUPP):
				return false, &os.PathError{Op: "link", Path: path, Err: lerr}
			}
			// No hard links here (another file system, or none supported): the reference's way.
		}
	}
	return createExcl(path, content, 0o600)
}

// reserve takes ip for key. False when another holder has it; the index learns who.
func (s *Store) reserve(v *view, ip netip.Addr, key string) (bool, error) {
	path := s.ipPath(ip)
	for attempt := 0; attempt < 3; attempt++ {
		if v.err != nil {
			return false, v.err
		}
		s.beginWrite()
		ok, err := s.createReservation(path, []byte(key))
		if err != nil {
			return false, fmt.Errorf("reserve %s: %w", ip, err)
		}
		if ok {
			v.add(ip, key)
			return true, nil
		}
		data, err := readSmall(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("read reservation %s: %w", ip, err)
		}
		holder := strings.TrimSpace(string(data))
		if holder == "" {
			// An empty file is what the reference leaves when killed between its create and
			// its write; under the lock nobody is writing it.
			s.logf("removing empty reservation file %s (left by an interrupted ADD)", path)
			if err := unlinkIfExists(path); err != nil {
				return false, err
			}
			continue
		}
		v.add(ip, holder)
		return false, nil
	}
	return false, nil
}

func lastName(set int) string { return lastPrefix + strconv.Itoa(set) }

func (s *Store) writeLast(v *view, set int, ip netip.Addr) error {
	name, content := lastName(set), ip.String()
	s.beginWrite()
	// In place, as the reference rewrites it (but without truncating it to zero first, which
	// makes ext4 flush it at close). A process killed half way can leave a torn address here:
	// it is only where the next search starts, and an unparsable one means the range start.
	err := writeInPlace(filepath.Join(s.netDir, name), []byte(content), 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	v.last[name] = content
	failpoint("last-written")
	return nil
}

// holder reads who holds ip from its reservation file: "" and false when it is free.
func (s *Store) holder(ip netip.Addr) (string, bool, error) {
	data, err := readSmall(s.ipPath(ip))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return strings.TrimSpace(string(data)), true, nil
}

// owned lists the addresses whose reservation files hold key (verified on disk), fixing the
// index where it was behind.
func (s *Store) owned(v *view, key string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, ip := range v.lookup(key) {
		h, found, err := s.holder(ip)
		if err != nil {
			return nil, err
		}
		if found && h == key {
			out = append(out, ip)
			continue
		}
		s.beginWrite()
		v.remove(ip, key)
		if found {
			v.add(ip, h)
		}
	}
	return out, nil
}

// ownedOrLegacy is owned(key), or when empty the reservations written by old reference
// versions with the container ID alone, as the reference's DEL and CHECK match them.
func (s *Store) ownedOrLegacy(v *view, containerID, ifName string) ([]netip.Addr, string, error) {
	key := Key(containerID, ifName)
	ips, err := s.owned(v, key)
	if err != nil || len(ips) > 0 {
		return ips, key, err
	}
	legacy := strings.TrimSpace(containerID)
	ips, err = s.owned(v, legacy)
	return ips, legacy, err
}
