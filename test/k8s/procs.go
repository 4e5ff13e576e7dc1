package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is one daemon the run started; it is stopped by its recorded PID, never by name.
type Proc struct {
	Name string
	PID  int
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Exited reports whether the process has ended, and how.
func (p *Proc) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Supervisor starts the run's daemons and remembers every PID it started, in memory and in
// <state>/pids/<name>.pid, so teardown (and a person after a crash) can stop exactly those.
type Supervisor struct {
	pidDir string
	logDir string
	mu     sync.Mutex
	procs  []*Proc
}

func NewSupervisor(state string) (*Supervisor, error) {
	s := &Supervisor{pidDir: filepath.Join(state, "pids"), logDir: filepath.Join(state, "logs")}
	for _, d := range []string{s.pidDir, s.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// Orphans of our daemons (containerd's shims, a pod's processes when its runtime dies) are
	// re-parented to us rather than to init, so teardown finds them as our children.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("become child subreaper: %w", err)
	}
	return s, nil
}

// Start runs argv as a daemon with its output in <logs>/<name>.log. The child gets SIGKILL if
// this process dies (PR_SET_PDEATHSIG), so even a kill -9 of the harness does not leave it behind.
func (s *Supervisor) Start(name string, env []string, argv ...string) (*Proc, error) {
	logPath := filepath.Join(s.logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	f.Close()
	p := &Proc{Name: name, PID: cmd.Process.Pid, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	_ = os.WriteFile(filepath.Join(s.pidDir, name+".pid"), []byte(strconv.Itoa(p.PID)+"\n"), 0o644)
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// Stop sends SIGTERM to the recorded PID, then SIGKILL after grace. It is a no-op once exited.
func (s *Supervisor) Stop(p *Proc, grace time.Duration) {
	if p == nil {
		return
	}
	if done, _ := p.Exited(); !done {
		_ = syscall.Kill(p.PID, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
			<-p.done
		}
	}
	_ = os.Remove(filepath.Join(s.pidDir, p.Name+".pid"))
}

// StopAll stops every daemon still running, the last started first.
func (s *Supervisor) StopAll(grace time.Duration) {
	s.mu.Lock()
	procs := append([]*Proc(nil), s.procs...)
	s.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		s.Stop(procs[i], grace)
	}
}

// tracked reports whether pid is one of the daemons Start made (those are reaped by their Wait).
func (s *Supervisor) tracked(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.procs {
		if p.PID == pid {
			return true
		}
	}
	return false
}

// procStatus reads the fields of /proc/<pid>/status this file needs.
func procPPid(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			return n, err == nil
		}
	}
	return 0, false
}

func allPIDs() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	return pids
}

// Orphans lists processes re-parented to us that Start did not make (a runtime's shims).
func (s *Supervisor) Orphans() []int {
	me := os.Getpid()
	var out []int
	for _, pid := range allPIDs() {
		if pp, ok := procPPid(pid); ok && pp == me && !s.tracked(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// KillPIDs sends SIGKILL to each listed PID, then reaps those that are our children, waiting
// until every one of them is gone (or ctx ends). It returns the PIDs still alive.
func (s *Supervisor) KillPIDs(ctx context.Context, pids []int) []int {
	for _, pid := range pids {
		if pid > 1 && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	left := pids
	for len(left) > 0 {
		var still []int
		for _, pid := range left {
			if !s.tracked(pid) {
				var ws unix.WaitStatus
				_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil) // only succeeds for our own children
			}
			if alive(pid) {
				still = append(still, pid)
			}
		}
		left = still
		if len(left) == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return left
}

// alive is true while pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// state is the field after the ")" closing the command name
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// nsInode returns the inode identifying /proc/<pid>/ns/<kind>.
func nsInode(pid int, kind string) (uint64, error) {
	var st unix.Stat_t
	p := "/proc/self/ns/" + kind
	if pid > 0 {
		p = fmt.Sprintf("/proc/%d/ns/%s", pid, kind)
	}
	if err := unix.Stat(p, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// PIDsInNS lists processes whose <kind> namespace has the given inode.
func PIDsInNS(kind string, ino uint64) []int {
	var out []int
	for _, pid := range allPIDs() {
		if i, err := nsInode(pid, kind); err == nil && i == ino {
			out = append(out, pid)
		}
	}
	return out
}

// waitFor polls cond every interval until it returns true, or returns the last error on timeout.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("condition not met")
			}
			return fmt.Errorf("waiting %s for %s: %w", timeout, what, last)
		case <-time.After(interval):
		}
	}
}
