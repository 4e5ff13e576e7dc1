package crishim

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procRef names one process across restarts of the shim: a pid alone could be reused, the
// pair (pid, start time in clock ticks since boot) cannot.
type procRef struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// procStartTime reads field 22 of /proc/<pid>/stat.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, errors.New("zombie")
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func refOf(pid int) (procRef, error) {
	st, err := procStartTime(pid)
	if err != nil {
		return procRef{}, err
	}
	return procRef{PID: pid, StartTime: st}, nil
}

// alive reports whether the process still runs (and is the same one).
func (r procRef) alive() bool {
	if r.PID <= 0 {
		return false
	}
	st, err := procStartTime(r.PID)
	return err == nil && st == r.StartTime
}

// signal sends sig to the process if it is still the same one.
func (r procRef) signal(sig syscall.Signal) error {
	if !r.alive() {
		return nil
	}
	if err := syscall.Kill(r.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	return nil
}

// waitGone polls until the process has exited or the deadline passes.
func (r procRef) waitGone(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for delay := time.Millisecond; ; delay = min(delay*2, 50*time.Millisecond) {
		if !r.alive() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(delay)
	}
}

// kill sends SIGKILL and waits (bounded) for the process to be gone.
func (r procRef) kill() error {
	if err := r.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !r.waitGone(10 * time.Second) {
		return fmt.Errorf("process %d survived SIGKILL", r.PID)
	}
	return nil
}

// ProcessesWithArg lists the pids of processes whose command line contains arg as one of its
// arguments (the shim marks its helper processes with its state dir). Used at startup to find
// orphans and by tests to make sure nothing is left.
func ProcessesWithArg(arg string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range bytes.Split(b, []byte{0}) {
			if string(a) == arg {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// cmdlineArgs returns the arguments of a process.
func cmdlineArgs(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}
