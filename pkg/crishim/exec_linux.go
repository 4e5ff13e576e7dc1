package crishim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// maxExecOutput caps what ExecSync keeps of each stream (kubelet's probes read a few KiB).
const maxExecOutput = 16 << 20

// execProc describes one command to run in a running container's namespaces.
type execProc struct {
	args           []string
	stdin          io.Reader
	stdout, stderr io.Writer
	tty            *os.File // the pty's replica end when a terminal was asked for
}

// runningContainer returns the container's process, which must be running.
func (s *Server) runningContainer(id string) (*container, procRef, error) {
	c, err := s.lookupContainer(id)
	if err != nil {
		return nil, procRef{}, err
	}
	o := c.observe()
	if o.state != runtimeapi.ContainerState_CONTAINER_RUNNING || o.started == nil || !o.started.Proc.alive() {
		return nil, procRef{}, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.rec.ID)
	}
	return c, o.started.Proc, nil
}

// execIn runs a command in all the namespaces of the container's process, with its
// environment and working directory, and waits for it. The command is killed when ctx ends.
// The result's error is a utilexec.CodeExitError for a non-zero exit.
func (s *Server) execIn(ctx context.Context, c *container, proc procRef, p execProc) error {
	nss, err := openNamespaces(proc.PID, []string{"pid", "ipc", "uts", "net", "mnt"}, "")
	if err != nil {
		return status.Errorf(codes.Internal, "%v", err)
	}
	if !proc.alive() {
		closeNamespaces(nss)
		return status.Errorf(codes.FailedPrecondition, "container %s is not running", c.rec.ID)
	}
	sb, err := s.lookupSandbox(c.rec.SandboxID)
	if err != nil {
		closeNamespaces(nss)
		return err
	}
	env := containerEnv(c.cfg, sb.cfg)
	cwd := c.cfg.GetWorkingDir()
	if cwd == "" {
		cwd = "/"
	}
	type result struct {
		ps  *os.ProcessState
		err error
	}
	done := make(chan result, 1)
	started := make(chan *os.Process, 1)
	go func() {
		defer close(started)
		err := onSpoiledThread(func() error {
			defer closeNamespaces(nss)
			if err := joinNamespaces(nss); err != nil {
				return err
			}
			path, err := lookPath(p.args[0], env)
			if err != nil {
				return err
			}
			cmd := &exec.Cmd{Path: path, Args: p.args, Env: env, Dir: cwd, Stdin: p.stdin, Stdout: p.stdout, Stderr: p.stderr}
			// No Pdeathsig: the command is in the container's PID namespace, where its parent
			// is invisible and Go's fork would take that for a dead parent. It is killed on
			// the caller's timeout instead.
			cmd.SysProcAttr = &syscall.SysProcAttr{}
			if p.tty != nil {
				cmd.Stdin, cmd.Stdout, cmd.Stderr = p.tty, p.tty, p.tty
				cmd.SysProcAttr.Setsid = true
				cmd.SysProcAttr.Setctty = true
				cmd.SysProcAttr.Ctty = 0
			}
			cmd.WaitDelay = time.Second // a background child holding the pipes does not block us
			if err := cmd.Start(); err != nil {
				return err
			}
			started <- cmd.Process
			err = cmd.Wait()
			done <- result{ps: cmd.ProcessState, err: err}
			return nil
		})
		if err != nil {
			done <- result{err: err}
		}
	}()
	proc2, ok := <-started
	if !ok {
		r := <-done
		return status.Errorf(codes.Unknown, "exec in container %s: %v", c.rec.ID, r.err)
	}
	select {
	case r := <-done:
		return exitError(r.ps, r.err)
	case <-ctx.Done():
		_ = proc2.Kill()
		<-done
		return ctx.Err()
	}
}

func exitError(ps *os.ProcessState, err error) error {
	if ps == nil {
		return err
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return utilexec.CodeExitError{Err: fmt.Errorf("killed by signal %v", ws.Signal()), Code: 128 + int(ws.Signal())}
	}
	if ps.ExitCode() != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command exited with code %d", ps.ExitCode()), Code: ps.ExitCode()}
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay) {
		return err
	}
	return nil
}

// cappedBuffer keeps at most max bytes and drops the rest.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// ExecSync runs a command in the container and returns its output (stdout and stderr kept
// apart) and exit code. On its timeout the command is killed and DeadlineExceeded answered.
func (s *Server) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "exec: cmd is empty")
	}
	c, proc, err := s.runningContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if req.GetTimeout() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.GetTimeout())*time.Second)
		defer cancel()
	}
	stdout, stderr := &cappedBuffer{max: maxExecOutput}, &cappedBuffer{max: maxExecOutput}
	err = s.execIn(ctx, c, proc, execProc{args: req.GetCmd(), stdout: stdout, stderr: stderr})
	resp := &runtimeapi.ExecSyncResponse{Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var ce utilexec.CodeExitError
	switch {
	case err == nil:
	case errors.As(err, &ce):
		resp.ExitCode = int32(ce.Code)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, status.Errorf(codes.DeadlineExceeded, "exec in container %s: timed out after %ds, command killed", c.rec.ID, req.GetTimeout())
	case errors.Is(err, context.Canceled):
		return nil, status.Errorf(codes.Canceled, "exec in container %s: canceled, command killed", c.rec.ID)
	default:
		return nil, err
	}
	return resp, nil
}

// Exec, Attach and PortForward hand out URLs of the streaming server.
func (s *Server) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "exec: cmd is empty")
	}
	if _, _, err := s.runningContainer(req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.stream.GetExec(req)
}

func (s *Server) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if _, _, err := s.runningContainer(req.GetContainerId()); err != nil {
		return nil, err
	}
	return s.stream.GetAttach(req)
}

func (s *Server) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	sb, err := s.lookupSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if !sb.ready() {
		return nil, status.Errorf(codes.FailedPrecondition, "pod sandbox %s is not ready", sb.rec.ID)
	}
	return s.stream.GetPortForward(req)
}

// streamRuntime serves the streaming server's sessions.
type streamRuntime struct{ s *Server }

func (r *streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, proc, err := r.s.runningContainer(id)
	if err != nil {
		return err
	}
	p := execProc{args: cmd, stdin: in, stdout: out, stderr: errw}
	if p.stdout == nil {
		p.stdout = io.Discard
	}
	if p.stderr == nil {
		p.stderr = io.Discard
	}
	if !tty {
		return r.s.execIn(ctx, c, proc, p)
	}
	ptm, pts, err := openPty()
	if err != nil {
		return err
	}
	defer ptm.Close()
	p.tty = pts
	go func() {
		for sz := range resize {
			_ = unix.IoctlSetWinsize(int(ptm.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: sz.Height, Col: sz.Width})
		}
	}()
	if in != nil {
		go func() { _, _ = io.Copy(ptm, in) }()
	}
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(p.stdout, ptm); close(copied) }()
	err = r.s.execIn(ctx, c, proc, execProc{args: cmd, tty: pts})
	pts.Close()
	select {
	case <-copied:
	case <-time.After(time.Second):
	}
	return err
}

// openPty opens a new pseudo-terminal pair (multiplexer and replica).
func openPty() (*os.File, *os.File, error) {
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open pty: %w", err)
	}
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	pts, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("open pty replica: %w", err)
	}
	return ptm, pts, nil
}

// Attach connects to the container's monitor: output from now on, and stdin when the
// container was created with stdin.
func (r *streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, _, err := r.s.runningContainer(id)
	if err != nil {
		return err
	}
	if tty {
		return status.Error(codes.Unimplemented, "crishim containers have no terminal to attach to (tty is not supported)")
	}
	conn, err := net.Dial("unix", "@"+r.s.attachSocket(c.rec.ID))
	if err != nil {
		return fmt.Errorf("attach to container %s: %w", c.rec.ID, err)
	}
	defer conn.Close()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	var wmu sync.Mutex
	if in != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := in.Read(buf)
				if n > 0 {
					wmu.Lock()
					werr := writeFrame(conn, frameStdin, buf[:n])
					wmu.Unlock()
					if werr != nil {
						return
					}
				}
				if err != nil {
					wmu.Lock()
					_ = writeFrame(conn, frameStdinClose, nil)
					wmu.Unlock()
					return
				}
			}
		}()
	}
	for {
		kind, data, err := readFrame(conn)
		if err != nil {
			return nil // the container ended or the client went away
		}
		var w io.Writer
		switch kind {
		case frameStdout:
			w = out
		case frameStderr:
			w = errw
		}
		if w != nil {
			if _, err := w.Write(data); err != nil {
				return nil
			}
		}
	}
}

// PortForward connects the stream to a TCP port on the pod's localhost, from inside its netns.
func (r *streamRuntime) PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	sb, err := r.s.lookupSandbox(podSandboxID)
	if err != nil {
		return err
	}
	var conn net.Conn
	dial := func() error {
		var err error
		conn, err = (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		return err
	}
	if sb.rec.NetNS != "" {
		err = inNetNS(sb.rec.NetNS, dial)
	} else {
		err = dial()
	}
	if err != nil {
		return fmt.Errorf("port forward to pod %s port %d: %w", sb.rec.ID, port, err)
	}
	defer conn.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(conn, stream); done <- struct{}{} }()
	go func() { _, _ = io.Copy(stream, conn); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}
