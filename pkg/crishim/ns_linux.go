package crishim

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// nsKinds are the namespace types a pod process can join, in the order they are joined: the
// mount namespace last, because it changes how /proc paths resolve for the joining thread.
var nsKinds = []struct {
	name string
	flag int
}{
	{"pid", unix.CLONE_NEWPID},
	{"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS},
	{"net", unix.CLONE_NEWNET},
	{"mnt", unix.CLONE_NEWNS},
}

// nsFile is an open namespace file to join.
type nsFile struct {
	kind string
	f    *os.File
}

// openNamespaces opens /proc/<pid>/ns/<kind> for each kind, plus an explicit net path when
// netPath is set (the pinned pod netns). Kinds the caller does not want are left out.
func openNamespaces(pid int, kinds []string, netPath string) ([]nsFile, error) {
	var out []nsFile
	for _, k := range nsKinds {
		want := false
		for _, w := range kinds {
			want = want || w == k.name
		}
		if !want {
			continue
		}
		path := fmt.Sprintf("/proc/%d/ns/%s", pid, k.name)
		if k.name == "net" && netPath != "" {
			path = netPath
		}
		f, err := os.Open(path)
		if err != nil {
			closeNamespaces(out)
			return nil, fmt.Errorf("open %s namespace: %w", k.name, err)
		}
		out = append(out, nsFile{kind: k.name, f: f})
	}
	return out, nil
}

func closeNamespaces(nss []nsFile) {
	for _, n := range nss {
		n.f.Close()
	}
}

// sameNamespace reports whether two namespace files are the same namespace (same inode).
func sameNamespace(a, b string) bool {
	var sa, sb unix.Stat_t
	if unix.Stat(a, &sa) != nil || unix.Stat(b, &sb) != nil {
		return false
	}
	return sa.Ino == sb.Ino && sa.Dev == sb.Dev
}

// joinNamespaces moves the calling thread into the given namespaces. The caller must have
// locked the goroutine to its thread and must never unlock it: the thread is spoiled and the Go
// runtime discards it when the goroutine ends. The filesystem attributes are unshared first so
// that the mount namespace can be joined from a multi-threaded process. Namespaces equal to the
// thread's current ones are skipped (setns into one's own pid namespace is refused otherwise).
func joinNamespaces(nss []nsFile) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare filesystem attributes: %w", err)
	}
	tid := unix.Gettid()
	for _, n := range nss {
		cur := fmt.Sprintf("/proc/%d/task/%d/ns/%s", os.Getpid(), tid, n.kind)
		if n.kind == "pid" {
			cur = fmt.Sprintf("/proc/%d/task/%d/ns/pid_for_children", os.Getpid(), tid)
		}
		if sameNamespace(cur, fmt.Sprintf("/proc/self/fd/%d", n.f.Fd())) {
			continue
		}
		if err := unix.Setns(int(n.f.Fd()), 0); err != nil {
			return fmt.Errorf("join %s namespace: %w", n.kind, err)
		}
	}
	return nil
}

// onSpoiledThread runs fn on a fresh OS thread that is thrown away afterwards, so that fn may
// change the thread's namespaces freely. It returns fn's error.
func onSpoiledThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		errc <- fn()
	}()
	return <-errc
}

// ensureSharedDir makes dir a mount point with shared propagation (bind-mounting it onto
// itself when needed), as `ip netns` does for /run/netns. Pod mount namespaces are made slaves
// of it, so that unmounting a pinned netns here also drops their copies of that mount and the
// network namespace really goes away.
func ensureSharedDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err == nil {
		return nil
	} else if !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// newNetNS creates a network namespace pinned by a bind mount at path and, when start is set,
// starts it as a process inside that namespace (the pod's infra process). The namespace is
// removed again when start fails.
func newNetNS(path string, start func() error) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	f.Close()
	err = onSpoiledThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin network namespace at %s: %w", path, err)
		}
		if start != nil {
			return start()
		}
		return nil
	})
	if err != nil {
		_ = removeNetNS(path)
	}
	return err
}

// inNetNS runs fn on a thread inside the network namespace at path (fn may start processes,
// which inherit the namespace).
func inNetNS(path string, fn func() error) error {
	return onSpoiledThread(func() error {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("open netns %s: %w", path, err)
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("join netns %s: %w", path, err)
		}
		return fn()
	})
}

// removeNetNS unmounts and deletes a pinned network namespace; a missing one is not an error.
func removeNetNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove netns file %s: %w", path, err)
	}
	return nil
}

// MountsUnder lists the mount points at or below dir in the calling process's mount namespace,
// deepest first (the order to unmount them in).
func MountsUnder(dir string) ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	// mountinfo lists parents before children: reverse for unmounting.
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, sc.Err()
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// UnmountAll detaches every mount at or below dir (used by teardown and by tests' cleanup).
func UnmountAll(dir string) error {
	mps, err := MountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// lookPath finds a command the way a container runtime does: with the container's PATH, in
// the calling thread's mount namespace.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, file)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: %w", file, exec.ErrNotFound)
}
