package crishim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MonitorArg is the first argument that makes the shim binary run as a container's monitor.
const MonitorArg = "__monitor"

// Attach stream framing between the shim and a monitor: 1 byte kind, 4 bytes big-endian
// length, payload.
const (
	frameStdin      = 0 // client -> monitor: data for the container's stdin
	frameStdout     = 1 // monitor -> client
	frameStderr     = 2 // monitor -> client
	frameStdinClose = 3 // client -> monitor: the client's stdin ended
)

// MonitorMain supervises one container process, like a containerd shim: it joins the pod's
// namespaces (passed as files 4, 5, ... in spec order), starts the process, writes its output
// to the CRI log and to attached clients, and records the exit status when it ends. It
// outlives restarts of the shim. args: <state dir> <container id>.
func MonitorMain(args []string) int {
	report := os.NewFile(3, "report")
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "monitor: %v\n", err)
		fmt.Fprintf(report, "%v\n", err)
		return 1
	}
	if len(args) != 2 {
		return fail(fmt.Errorf("usage: %s <state dir> <container id>", MonitorArg))
	}
	dir := filepath.Join(args[0], containersDir, args[1])
	var spec containerSpec
	if err := readJSON(filepath.Join(dir, "spec.json"), &spec); err != nil {
		return fail(err)
	}
	if len(spec.Args) == 0 {
		return fail(errors.New("no command"))
	}
	nss := make([]nsFile, len(spec.Namespaces))
	for i, k := range spec.Namespaces {
		nss[i] = nsFile{kind: k, f: os.NewFile(uintptr(4+i), k)}
	}
	// None of the inherited files may leak into the container.
	for fd := 3; fd < 4+len(nss); fd++ {
		unix.CloseOnExec(fd)
	}
	var log *criLog
	if spec.LogPath != "" {
		var err error
		if log, err = openCRILog(spec.LogPath); err != nil {
			return fail(fmt.Errorf("open log: %w", err))
		}
		defer log.close()
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	var stdinR, stdinW *os.File
	if spec.Stdin {
		if stdinR, stdinW, err = os.Pipe(); err != nil {
			return fail(err)
		}
	}
	hub := &attachHub{stdin: stdinW, stdinOnce: spec.StdinOnce, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("unix", "@"+spec.AttachSocket)
	if err != nil {
		return fail(fmt.Errorf("attach socket: %w", err))
	}
	defer ln.Close()
	go hub.accept(ln)

	type started struct {
		pid int
		err error
	}
	startc := make(chan started, 1)
	exitc := make(chan *os.ProcessState, 1)
	go func() {
		// The process is forked from this thread, which joins the pod's namespaces and stays
		// alive (locked) until the process ends: Pdeathsig is tied to it.
		runtime.LockOSThread()
		if err := joinNamespaces(nss); err != nil {
			startc <- started{err: err}
			return
		}
		closeNamespaces(nss)
		path, err := lookPath(spec.Args[0], spec.Env)
		if err != nil {
			startc <- started{err: err}
			return
		}
		cmd := &exec.Cmd{Path: path, Args: spec.Args, Env: spec.Env, Dir: spec.Cwd, Stdout: outW, Stderr: errW}
		if stdinR != nil {
			cmd.Stdin = stdinR
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{}
		if !containsStr(spec.Namespaces, "pid") {
			// The container dies with its monitor. Not when it joins the pod's PID namespace:
			// there its parent is invisible to it (getppid() is 0), which Go's fork takes for a
			// dead parent; killing the pod's infra process ends such containers instead.
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}
		if spec.NewPIDNS {
			cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
		}
		if err := cmd.Start(); err != nil {
			startc <- started{err: err}
			return
		}
		startc <- started{pid: cmd.Process.Pid}
		_ = cmd.Wait()
		exitc <- cmd.ProcessState
	}()
	st := <-startc
	outW.Close()
	errW.Close()
	if stdinR != nil {
		stdinR.Close()
	}
	if st.err != nil {
		return fail(st.err)
	}
	ref, _ := refOf(st.pid)
	if err := writeJSON(filepath.Join(dir, "started.json"), startedRecord{Proc: ref, StartedAt: time.Now().UnixNano()}); err != nil {
		return fail(err)
	}
	fmt.Fprintf(report, "ok %d\n", st.pid)
	report.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1)
	go func() {
		for range sigs {
			if log != nil {
				if err := log.reopen(); err != nil {
					fmt.Fprintf(os.Stderr, "monitor: reopen log: %v\n", err)
				}
			}
		}
	}()
	var pumps sync.WaitGroup
	for _, p := range []struct {
		r      *os.File
		stream string
		kind   byte
	}{{outR, "stdout", frameStdout}, {errR, "stderr", frameStderr}} {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			pump(p.r, &lineSplitter{stream: p.stream, log: log}, hub, p.kind)
		}()
	}
	ps := <-exitc
	// Wait for the output to drain, but not forever: a daemonised grandchild may hold the pipes.
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
	}
	hub.closeAll()
	rec := exitRecord{FinishedAt: time.Now().UnixNano(), Reason: "Completed"}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		rec.ExitCode = 128 + int32(ws.Signal())
		rec.Reason = "Error"
		rec.Message = "killed by signal " + ws.Signal().String()
	} else {
		rec.ExitCode = int32(ps.ExitCode())
		if rec.ExitCode != 0 {
			rec.Reason = "Error"
		}
	}
	if err := writeJSON(filepath.Join(dir, "exit.json"), rec); err != nil {
		fmt.Fprintf(os.Stderr, "monitor: record exit: %v\n", err)
		return 1
	}
	return 0
}

// pump copies one output stream of the container to the log and to attached clients.
func pump(r *os.File, ls *lineSplitter, hub *attachHub, kind byte) {
	defer r.Close()
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			ls.write(buf[:n])
			hub.broadcast(kind, buf[:n])
		}
		if err != nil {
			ls.flush()
			return
		}
	}
}

// attachHub fans the container's output out to attached clients and feeds their input to the
// container's stdin (when it has one).
type attachHub struct {
	mu        sync.Mutex
	conns     map[net.Conn]bool
	stdin     *os.File
	stdinOnce bool
	closed    bool
}

func (h *attachHub) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			continue
		}
		h.conns[c] = true
		h.mu.Unlock()
		go h.serve(c)
	}
}

func (h *attachHub) serve(c net.Conn) {
	defer h.drop(c)
	for {
		kind, data, err := readFrame(c)
		if err != nil {
			if h.stdinOnce {
				h.closeStdin()
			}
			return
		}
		switch kind {
		case frameStdin:
			h.mu.Lock()
			in := h.stdin
			h.mu.Unlock()
			if in != nil {
				_, _ = in.Write(data)
			}
		case frameStdinClose:
			if h.stdinOnce {
				h.closeStdin()
			}
		}
	}
}

func (h *attachHub) closeStdin() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stdin != nil {
		h.stdin.Close()
		h.stdin = nil
	}
}

func (h *attachHub) drop(c net.Conn) {
	h.mu.Lock()
	delete(h.conns, c)
	h.mu.Unlock()
	c.Close()
}

func (h *attachHub) broadcast(kind byte, data []byte) {
	h.mu.Lock()
	conns := make([]net.Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		if err := writeFrame(c, kind, data); err != nil {
			h.drop(c) // a slow or gone client does not hold up the container
		}
	}
}

func (h *attachHub) closeAll() {
	h.mu.Lock()
	h.closed = true
	conns := h.conns
	h.conns = map[net.Conn]bool{}
	h.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	h.closeStdin()
}

func writeFrame(w io.Writer, kind byte, data []byte) error {
	hdr := make([]byte, 5, 5+len(data))
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(data)))
	_, err := w.Write(append(hdr, data...))
	return err
}

func readFrame(r io.Reader) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("attach frame of %d bytes", n)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, err
	}
	return hdr[0], data, nil
}
