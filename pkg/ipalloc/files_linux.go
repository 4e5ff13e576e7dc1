package ipalloc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrLockTimeout is returned when the network's lock could not be taken in time: a transient
// condition (CNI code 11, the runtime retries).
var ErrLockTimeout = errors.New("timed out waiting for the network's lock")

// CrashEnv names a crash point (see CrashPoints) at which the process kills itself with
// SIGKILL. Tests use it to prove that a killed ADD leaves a state the next DEL or GC repairs.
const CrashEnv = "CNI_SUITE_IPALLOC_CRASH_AT"

// CrashPoints are the places of a reservation where CrashEnv can stop the process.
var CrashPoints = []string{
	"locked", "index-invalidated", "tmp-created", "tmp-written", "linked", "tmp-removed",
	"last-written", "index-bucket-written", "index-written", "stamp-written",
}

var crashAt = os.Getenv(CrashEnv)

func failpoint(name string) {
	if crashAt != "" && crashAt == name {
		_ = unix.Kill(unix.Getpid(), unix.SIGKILL)
		select {} // the signal is on its way
	}
}

// flock takes an exclusive flock on fd, waiting at most until ctx ends or timeout passes.
func flock(ctx context.Context, fd int, timeout time.Duration) error {
	err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("flock: %w", err)
	}
	// Block in another goroutine on a duplicate of fd (same open file description, so the
	// lock it gets is ours); if we give up first, it releases the lock when it finally gets it.
	dup, err := unix.Dup(fd)
	if err != nil {
		return fmt.Errorf("dup lock fd: %w", err)
	}
	var mu sync.Mutex
	abandoned := false
	got := make(chan error, 1)
	go func() {
		var err error
		for {
			if err = unix.Flock(dup, unix.LOCK_EX); !errors.Is(err, unix.EINTR) {
				break
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if abandoned {
			if err == nil {
				_ = unix.Flock(dup, unix.LOCK_UN)
			}
			_ = unix.Close(dup)
			return
		}
		got <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		_ = unix.Close(dup)
		if err != nil {
			return fmt.Errorf("flock: %w", err)
		}
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	select {
	case err := <-got: // got it just now
		_ = unix.Close(dup)
		if err != nil {
			return fmt.Errorf("flock: %w", err)
		}
		return nil
	default:
	}
	abandoned = true
	if ctx.Err() != nil {
		return fmt.Errorf("%w: %w", ErrLockTimeout, ctx.Err())
	}
	return fmt.Errorf("%w (%s)", ErrLockTimeout, timeout)
}

// readSmall reads a small file (a reservation, a marker) with as few syscalls as it can.
func readSmall(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	buf := make([]byte, 0, 128)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, len(buf))...)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):cap(buf)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "read", Path: path, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

func writeAll(fd int, data []byte) error {
	for len(data) > 0 {
		n, err := unix.Write(fd, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// writeFile writes data to path in place (truncating), mode perm for a new file.
func writeFile(path string, data []byte, perm uint32) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, perm)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := writeAll(fd, data); err != nil {
		unix.Close(fd)
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: path, Err: err}
	}
	return nil
}

// writeInPlace gives path the content data by writing over the existing file (creating it
// when missing) and cutting it to length. On ext4 this is far cheaper than a new file (inode
// allocation) or a truncate-then-write (which makes auto_da_alloc start writeback at close:
// truncating to a non-zero length does not). It is not atomic: callers either hold a marker
// that says the file is being written (the index stamp) or can live with a torn file.
func writeInPlace(path string, data []byte, perm uint32) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, perm)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	err = pwriteAll(fd, data, 0)
	if err == nil {
		err = unix.Ftruncate(fd, int64(len(data)))
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func pwriteAll(fd int, data []byte, off int64) error {
	for len(data) > 0 {
		n, err := unix.Pwrite(fd, data, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		data, off = data[n:], off+int64(n)
	}
	return nil
}

// createExcl makes a new file holding data; false when path already exists.
func createExcl(path string, data []byte, perm uint32) (bool, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, perm)
	if errors.Is(err, unix.EEXIST) {
		return false, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if err := writeAll(fd, data); err != nil {
		unix.Close(fd)
		_ = unix.Unlink(path)
		return false, &os.PathError{Op: "write", Path: path, Err: err}
	}
	if err := unix.Close(fd); err != nil {
		_ = unix.Unlink(path)
		return false, &os.PathError{Op: "close", Path: path, Err: err}
	}
	return true, nil
}

func unlinkIfExists(path string) error {
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "unlink", Path: path, Err: err}
	}
	return nil
}

// dirStamp identifies the state of a directory's entries: any entry added, removed or
// renamed changes its mtime/ctime (on Linux 6.13+ with multigrain timestamps, even within one
// clock tick once the previous value was observed).
type dirStamp struct {
	Dev, Ino       uint64
	MtimeS, MtimeN int64
	CtimeS, CtimeN int64
}

func statDir(path string) (dirStamp, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return dirStamp{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return dirStamp{}, fmt.Errorf("%s is not a directory", path)
	}
	return dirStamp{
		Dev: st.Dev, Ino: st.Ino,
		MtimeS: st.Mtim.Sec, MtimeN: st.Mtim.Nsec, CtimeS: st.Ctim.Sec, CtimeN: st.Ctim.Nsec,
	}, nil
}

var (
	bootOnce sync.Once
	bootID   string
)

// currentBootID changes at every boot: an index written before a crash of the machine is
// rebuilt rather than trusted (no fsync ordering is assumed).
func currentBootID() string {
	bootOnce.Do(func() {
		b, err := readSmall("/proc/sys/kernel/random/boot_id")
		if err != nil {
			bootID = "unknown"
			return
		}
		bootID = strings.TrimSpace(string(b))
	})
	return bootID
}
