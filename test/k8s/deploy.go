package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsEvent is one inotify event in a watched directory, numbered in arrival order.
type fsEvent struct {
	Seq  int
	Dir  string
	Name string
	Mask uint32
	At   time.Time
}

func (e fsEvent) String() string {
	var ops []string
	for _, m := range []struct {
		bit  uint32
		name string
	}{{unix.IN_CREATE, "create"}, {unix.IN_DELETE, "delete"}, {unix.IN_MOVED_FROM, "moved-from"},
		{unix.IN_MOVED_TO, "moved-to"}, {unix.IN_CLOSE_WRITE, "close-write"}} {
		if e.Mask&m.bit != 0 {
			ops = append(ops, m.name)
		}
	}
	return fmt.Sprintf("#%d %s/%s %s", e.Seq, e.Dir, e.Name, strings.Join(ops, "|"))
}

// removes reports whether the event takes the name away (deleted, or renamed away).
func (e fsEvent) removes() bool { return e.Mask&(unix.IN_DELETE|unix.IN_MOVED_FROM) != 0 }

// dirWatch records, in order, what happens to the entries of a few directories (one inotify
// instance, so events of different directories are totally ordered).
type dirWatch struct {
	fd     int
	dirs   map[int]string
	mu     sync.Mutex
	events []fsEvent
	stop   chan struct{}
	done   chan struct{}
}

// watchDirs starts watching; label maps a short name to a directory path.
func watchDirs(label map[string]string) (*dirWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, err
	}
	w := &dirWatch{fd: fd, dirs: map[int]string{}, stop: make(chan struct{}), done: make(chan struct{})}
	for name, dir := range label {
		wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_DELETE|unix.IN_MOVED_FROM|unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE)
		if err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("watch %s: %w", dir, err)
		}
		w.dirs[wd] = name
	}
	go w.loop()
	return w, nil
}

func (w *dirWatch) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-w.stop:
			w.read(buf)
			return
		default:
		}
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		if n, _ := unix.Poll(fds, 50); n > 0 {
			w.read(buf)
		}
	}
}

func (w *dirWatch) read(buf []byte) {
	for {
		n, err := unix.Read(w.fd, buf)
		if err != nil || n <= 0 {
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			w.mu.Lock()
			w.events = append(w.events, fsEvent{Seq: len(w.events), Dir: w.dirs[int(ev.Wd)], Name: name, Mask: ev.Mask, At: time.Now()})
			w.mu.Unlock()
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

// Stop ends the watch and returns every event seen.
func (w *dirWatch) Stop() []fsEvent {
	close(w.stop)
	<-w.done
	unix.Close(w.fd)
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]fsEvent(nil), w.events...)
}

// readySampler samples the Node's Ready condition and the conflist's presence until stopped.
type readySampler struct {
	samples, notReady, missing int
	firstBad                   string
	stop, done                 chan struct{}
}

func sampleReadiness(ctx context.Context, c *Cluster, conflist string) *readySampler {
	s := &readySampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			n, err := c.NodeObj(ctx)
			_, serr := os.Stat(conflist)
			s.samples++
			switch {
			case err != nil:
				s.notReady++
				s.note(fmt.Sprintf("node read: %v", err))
			case n.Ready().Status != "True":
				s.notReady++
				s.note(fmt.Sprintf("Ready=%s %s: %s", n.Ready().Status, n.Ready().Reason, n.Ready().Message))
			}
			if serr != nil {
				s.missing++
				s.note("conflist missing")
			}
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *readySampler) note(m string) {
	if s.firstBad == "" {
		s.firstBad = m
	}
}

func (s *readySampler) Stop() { close(s.stop); <-s.done }

// runDeployChecks: a rolling update of the DaemonSet (a new image tag) never leaves the node
// without its config and the Node stays Ready; then the uninstall, run the way the README tells
// an operator, removes the conflist first, then the binaries, and the Node turns NotReady.
func runDeployChecks(ctx context.Context, f *flow, c *Cluster, d *DeployNetwork) {
	confDir, binDir := c.Path("/etc/cni/net.d"), c.Path("/opt/cni/bin")
	conflist := filepath.Join(confDir, conflistName)
	f.step("DaemonSet rolling update (new image tag): Node Ready and config present throughout", false, func() error {
		newImage := strings.TrimSuffix(d.Image, ":"+imageTag(d.Image)) + ":e2e-rollout"
		if _, err := c.Exec(ctx, 30*time.Second, "ctr", "--address", d.rt.sock, "-n", "k8s.io", "images", "tag", "--force", d.Image, newImage); err != nil {
			return err
		}
		before, err := c.Kubectl(ctx, 20*time.Second, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=cni-suite", "-o", "jsonpath={.items[*].metadata.name}")
		if err != nil {
			return err
		}
		w, err := watchDirs(map[string]string{"net.d": confDir})
		if err != nil {
			return err
		}
		s := sampleReadiness(ctx, c, conflist)
		_, err = c.Kubectl(ctx, 20*time.Second, "-n", "kube-system", "set", "image", "ds/cni-suite", "*="+newImage)
		if err == nil {
			_, err = c.Kubectl(ctx, 120*time.Second, "-n", "kube-system", "rollout", "status", "ds/cni-suite", "--timeout=110s")
		}
		// a few more samples once the new pod is in place
		time.Sleep(time.Second)
		s.Stop()
		events := w.Stop()
		if err != nil {
			return err
		}
		after, err := c.Kubectl(ctx, 20*time.Second, "-n", "kube-system", "get", "pods", "-l", "app.kubernetes.io/name=cni-suite",
			"-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image}{\"\\n\"}{end}")
		if err != nil {
			return err
		}
		if strings.Contains(after, strings.TrimSpace(before)+" ") || !strings.Contains(after, newImage) {
			return fmt.Errorf("the installer pod was not replaced by one with %s: before %q, after %q", newImage, before, after)
		}
		for _, e := range events {
			if e.Name == conflistName && e.removes() {
				return fmt.Errorf("the conflist went away during the rollout: %s", e)
			}
		}
		if s.notReady > 0 || s.missing > 0 {
			return fmt.Errorf("%d of %d samples NotReady, %d without the conflist (first: %s)", s.notReady, s.samples, s.missing, s.firstBad)
		}
		c.logf("rollout: %d samples, all Ready with the conflist present; %d file events in net.d, none removing it", s.samples, len(events))
		return nil
	})
	f.step("uninstall as the README says: conflist removed before the binaries, Node NotReady", false, func() error {
		bins, err := os.ReadDir(binDir)
		if err != nil {
			return err
		}
		var ours []string
		for _, b := range bins {
			if !b.IsDir() && slices.Contains(suitePlugins, b.Name()) {
				ours = append(ours, b.Name())
			}
		}
		if len(ours) < len(suitePlugins) {
			return fmt.Errorf("before the uninstall the bin dir holds only %v", ours)
		}
		w, err := watchDirs(map[string]string{"net.d": confDir, "bin": binDir})
		if err != nil {
			return err
		}
		steps := [][]string{
			{"delete", "-f", filepath.Join(d.Repo, "deploy", "daemonset.yaml"), "--wait=true"},
			{"apply", "-f", filepath.Join(d.Repo, "deploy", "uninstall")},
			{"-n", "kube-system", "rollout", "status", "ds/cni-suite-uninstall", "--timeout=110s"},
			{"delete", "-f", filepath.Join(d.Repo, "deploy", "uninstall"), "--wait=true"},
		}
		for _, s := range steps {
			if _, err = c.Kubectl(ctx, 120*time.Second, s...); err != nil {
				break
			}
		}
		events := w.Stop()
		if err != nil {
			return err
		}
		confGone, firstBin := -1, -1
		for _, e := range events {
			if e.Dir == "net.d" && e.Name == conflistName && e.removes() && confGone < 0 {
				confGone = e.Seq
			}
			if e.Dir == "bin" && slices.Contains(suitePlugins, e.Name) && e.removes() && firstBin < 0 {
				firstBin = e.Seq
			}
		}
		var log []string
		for _, e := range events {
			log = append(log, e.String())
		}
		switch {
		case confGone < 0:
			return fmt.Errorf("the conflist was never removed; events: %s", strings.Join(log, ", "))
		case firstBin < 0:
			return fmt.Errorf("no plugin binary was removed; events: %s", strings.Join(log, ", "))
		case firstBin < confGone:
			return fmt.Errorf("a binary went before the conflist; events: %s", strings.Join(log, ", "))
		}
		if _, err := os.Stat(conflist); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("conflist still there after the uninstall: %v", err)
		}
		for _, p := range suitePlugins {
			if _, err := os.Stat(filepath.Join(binDir, p)); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("plugin %s still there after the uninstall (%v)", p, err)
			}
		}
		cond, err := c.WaitNodeReady(ctx, "False", 60*time.Second)
		if err != nil {
			return err
		}
		c.logf("uninstall: conflist removed at event #%d, first binary at #%d; Node NotReady: %s", confGone, firstBin, cond.Message)
		return nil
	})
}

func imageTag(ref string) string {
	i := strings.LastIndexByte(ref, ':')
	if i < 0 || strings.Contains(ref[i:], "/") {
		return "latest"
	}
	return ref[i+1:]
}
