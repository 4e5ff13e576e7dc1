package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// killPlan says which plugin of the next ADD to SIGKILL, after how long, and whether the
// whole process group (the plugin and what it runs: host-local, iptables, nft) or the
// plugin process alone (as a runtime's timeout does; its children run on).
type killPlan struct {
	plugin string
	delay  time.Duration
	group  bool
}

// killExec is libcni's plugin executor with a SIGKILL at a chosen moment. Every plugin
// runs in its own process group so the group can be killed and waited for.
type killExec struct {
	version.PluginDecoder
	mu     sync.Mutex
	plan   *killPlan
	killed bool
	// durations of completed ADD executions per plugin, to choose kill points inside them
	durations map[string][]time.Duration
}

func newKillExec() *killExec { return &killExec{durations: map[string][]time.Duration{}} }

func (k *killExec) FindInPath(plugin string, paths []string) (string, error) {
	for _, p := range paths {
		f := filepath.Join(p, plugin)
		if _, err := exec.LookPath(f); err == nil {
			return f, nil
		}
	}
	return "", fmt.Errorf("plugin %q not found in %v", plugin, paths)
}

// arm sets the plan for the next ADD of plan.plugin.
func (k *killExec) arm(p killPlan) {
	k.mu.Lock()
	k.plan, k.killed = &p, false
	k.mu.Unlock()
}

// fired reports whether the armed kill hit a running plugin, and disarms.
func (k *killExec) fired() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.plan = nil
	return k.killed
}

// typical is the median duration of the plugin's last (up to 9) completed ADDs.
func (k *killExec) typical(plugin string) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	d := k.durations[plugin]
	if len(d) == 0 {
		return 100 * time.Millisecond
	}
	d = slices.Clone(d[max(0, len(d)-9):])
	slices.Sort(d)
	return d[len(d)/2]
}

func (k *killExec) ExecPlugin(ctx context.Context, path string, stdin []byte, env []string) ([]byte, error) {
	name := filepath.Base(path)
	isAdd := false
	for _, e := range env {
		if e == "CNI_COMMAND=ADD" {
			isAdd = true
		}
	}
	k.mu.Lock()
	plan := k.plan
	if plan != nil && (!isAdd || plan.plugin != name) {
		plan = nil
	}
	k.mu.Unlock()

	cmd := exec.CommandContext(ctx, path)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	var timer *time.Timer
	if plan != nil {
		timer = time.AfterFunc(plan.delay, func() {
			if plan.group {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			} else {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		})
	}
	err := cmd.Wait()
	if timer != nil {
		timer.Stop()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			k.mu.Lock()
			k.killed = true
			k.mu.Unlock()
			// What the killed plugin started (host-local, iptables) may still run; the
			// "following DEL" comes after it finished, or it could write after the DEL.
			waitGroupGone(pid, 10*time.Second)
			return nil, fmt.Errorf("%s killed by SIGKILL after %v", name, time.Since(start).Round(time.Millisecond))
		}
	}
	if err == nil && isAdd {
		k.mu.Lock()
		k.durations[name] = append(k.durations[name], time.Since(start))
		k.mu.Unlock()
	}
	if err != nil {
		e := &types.Error{}
		if jerr := json.Unmarshal(stdout.Bytes(), e); jerr != nil || e.Msg == "" {
			return nil, fmt.Errorf("%s: %v: %s %s", name, err, strings.TrimSpace(stdout.String()), strings.TrimSpace(stderr.String()))
		}
		return nil, e
	}
	return stdout.Bytes(), nil
}

// waitGroupGone waits until no live process is left in the process group (orphans
// reparented to a PID 1 that does not reap them stay as zombies: those do not count).
func waitGroupGone(pgid int, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && groupAlive(pgid) {
		time.Sleep(5 * time.Millisecond)
	}
}

func groupAlive(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}
