package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExecCounter counts the programs executed by this process's descendants (the plugins and
// whatever they run: iptables, nft, ...), by listening to the kernel's process events
// connector (NETLINK_CONNECTOR, CN_IDX_PROC). It follows fork events from our own PID
// down, so other processes on the machine are not counted, and it costs the measured
// processes nothing (no ptrace, no wrapper scripts on PATH). It needs root and the initial
// network namespace (the connector exists only there): the benchmark stays in the root
// netns and enters the node netns per call on a locked thread.
//
// Counts are exact; names (from /proc/<pid>/comm, read when the exec event arrives) are
// best effort: a program that exits before it is read is counted as "(unnamed)".
type ExecCounter struct {
	fd   int
	mu   sync.Mutex
	tree map[uint32]bool // our tgid and our live descendants
	// counts by program name since the start
	counts  map[string]int
	lost    bool
	fences  map[uint32]chan struct{}
	closed  chan struct{}
	done    chan struct{}
	readErr error
}

const (
	cnIdxProc         = 1
	cnValProc         = 1
	procCnMcastListen = 1
	procCnMcastIgnore = 2
	procEventFork     = 0x00000001
	procEventExec     = 0x00000002
	procEventExit     = 0x80000000
)

// NewExecCounter subscribes to process events. Close it when done.
func NewExecCounter() (*ExecCounter, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("netlink connector socket (needs the initial netns and root): %w", err)
	}
	// A large buffer: bursts of short processes from other work on the machine must not
	// overflow it (an overflow is reported: the counts are then marked unreliable).
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind proc connector: %w", err)
	}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	if err := sendListen(fd, procCnMcastListen); err != nil {
		unix.Close(fd)
		return nil, err
	}
	c := &ExecCounter{
		fd:     fd,
		tree:   map[uint32]bool{uint32(os.Getpid()): true},
		counts: map[string]int{},
		fences: map[uint32]chan struct{}{},
		closed: make(chan struct{}),
		done:   make(chan struct{}),
	}
	go c.read()
	// Make sure events flow before anyone relies on the counts.
	if err := c.Fence(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func sendListen(fd int, op uint32) error {
	msg := make([]byte, 16+20+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NLMSG_DONE)
	binary.NativeEndian.PutUint32(msg[12:], uint32(os.Getpid()))
	binary.NativeEndian.PutUint32(msg[16:], cnIdxProc)
	binary.NativeEndian.PutUint32(msg[20:], cnValProc)
	binary.NativeEndian.PutUint16(msg[32:], 4)
	binary.NativeEndian.PutUint32(msg[36:], op)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("subscribe to proc events: %w", err)
	}
	return nil
}

func (c *ExecCounter) read() {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-c.closed:
			return
		default:
		}
		n, _, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
				continue
			}
			if errors.Is(err, unix.ENOBUFS) {
				c.mu.Lock()
				c.lost = true
				c.mu.Unlock()
				continue
			}
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			c.handle(m.Data)
		}
	}
}

// handle decodes one cn_msg + proc_event.
func (c *ExecCounter) handle(d []byte) {
	// cn_msg: id{idx,val} seq ack len flags = 20 bytes; proc_event: what cpu timestamp(8) data
	if len(d) < 20+16+8 {
		return
	}
	ev := d[20:]
	what := binary.NativeEndian.Uint32(ev[0:])
	data := ev[16:]
	c.mu.Lock()
	defer c.mu.Unlock()
	switch what {
	case procEventFork:
		if len(data) < 16 {
			return
		}
		parentTgid := binary.NativeEndian.Uint32(data[4:])
		childTgid := binary.NativeEndian.Uint32(data[12:])
		if c.tree[parentTgid] {
			c.tree[childTgid] = true
		}
	case procEventExec:
		if len(data) < 8 {
			return
		}
		tgid := binary.NativeEndian.Uint32(data[4:])
		if !c.tree[tgid] {
			return
		}
		if ch, ok := c.fences[tgid]; ok {
			delete(c.fences, tgid)
			close(ch)
			return
		}
		c.counts[comm(tgid)]++
	case procEventExit:
		if len(data) < 8 {
			return
		}
		pid := binary.NativeEndian.Uint32(data[0:])
		tgid := binary.NativeEndian.Uint32(data[4:])
		if pid == tgid && tgid != uint32(os.Getpid()) {
			delete(c.tree, tgid)
		}
	}
}

func comm(pid uint32) string {
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/comm")
	if err != nil {
		return "(unnamed)"
	}
	return strings.TrimSpace(string(b))
}

// Fence returns once every exec event that happened before it was called has been counted:
// it runs a marker process and waits for that process's own exec event (not counted).
func (c *ExecCounter) Fence() error {
	cmd := exec.Command("/bin/true")
	ch := make(chan struct{})
	// The marker's PID is known only after Start; register before it can exec by holding
	// the lock across Start (the reader blocks on it meanwhile).
	c.mu.Lock()
	if err := cmd.Start(); err != nil {
		c.mu.Unlock()
		return fmt.Errorf("fence: %w", err)
	}
	c.fences[uint32(cmd.Process.Pid)] = ch
	c.mu.Unlock()
	_ = cmd.Wait()
	select {
	case <-ch:
		return nil
	case <-time.After(5 * time.Second):
		c.mu.Lock()
		delete(c.fences, uint32(cmd.Process.Pid))
		err := c.readErr
		c.mu.Unlock()
		return fmt.Errorf("proc connector: no exec event for the fence process (read error: %v)", err)
	}
}

// Counts returns a copy of the counts so far and whether events were lost (then the counts
// are lower bounds).
func (c *ExecCounter) Counts() (map[string]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		m[k] = v
	}
	return m, c.lost
}

// Since returns the counts added between before (a Counts result) and now, after a Fence.
func (c *ExecCounter) Since(before map[string]int) (map[string]int, bool, error) {
	if err := c.Fence(); err != nil {
		return nil, false, err
	}
	now, lost := c.Counts()
	d := map[string]int{}
	for k, v := range now {
		if v-before[k] != 0 {
			d[k] = v - before[k]
		}
	}
	return d, lost, nil
}

// Close unsubscribes.
func (c *ExecCounter) Close() {
	close(c.closed)
	<-c.done
	_ = sendListen(c.fd, procCnMcastIgnore)
	unix.Close(c.fd)
}
