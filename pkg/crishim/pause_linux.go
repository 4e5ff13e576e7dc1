package crishim

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// PauseArg is the first argument that makes the shim binary run as a pod's infra process.
const PauseArg = "__pause"

// PauseMain is the infra ("pause") process of a pod. It is started in the pod's new mount,
// UTS, IPC (and PID) namespaces, inside the pod's network namespace, and holds them while it
// lives. It sets the hostname, mounts /etc/hostname and /etc/resolv.conf (and /proc when the
// pod has its own PID namespace), reports "ok" on file 3, then waits for a signal, reaping
// orphans when it is the namespace's init. args: <state dir> <sandbox id>.
func PauseMain(args []string) int {
	report := os.NewFile(3, "report")
	unix.CloseOnExec(3)
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "pause: %v\n", err)
		if report != nil {
			fmt.Fprintf(report, "%v\n", err)
		}
		return 1
	}
	if len(args) != 2 {
		return fail(fmt.Errorf("usage: %s <state dir> <sandbox id>", PauseArg))
	}
	var spec pauseSpec
	if err := readJSON(filepath.Join(args[0], sandboxesDir, args[1], "pause.json"), &spec); err != nil {
		return fail(err)
	}
	if err := setupPod(spec); err != nil {
		return fail(err)
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	fmt.Fprintln(report, "ok")
	report.Close()
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reapAll()
			continue
		}
		return 0
	}
	return 0
}

func setupPod(spec pauseSpec) error {
	// Nothing mounted here may leak back to the node, while unmounts on the node (a removed
	// netns of another pod) must reach this namespace's copies.
	if err := unix.Mount("", "/", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make mounts slave: %w", err)
	}
	if spec.Hostname != "" {
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	binds := [][2]string{{spec.HostsFile, "/etc/hostname"}, {spec.ResolvConf, "/etc/resolv.conf"}}
	for _, b := range binds {
		if b[0] == "" {
			continue
		}
		if _, err := os.Stat(b[1]); err != nil {
			// Nothing to mount over (or a dangling symlink): creating the file would change
			// the node's filesystem, so the pod goes without.
			fmt.Fprintf(os.Stderr, "pause: not mounting %s: %v\n", b[1], err)
			continue
		}
		if err := unix.Mount(b[0], b[1], "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", b[0], b[1], err)
		}
	}
	if spec.MountProc {
		if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount /proc: %w", err)
		}
	}
	return nil
}

func reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
