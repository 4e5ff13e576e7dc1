package main

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// progress prints one line on stderr while a phase runs: rewritten in place on a terminal,
// every 5 seconds otherwise (make bench piped into a log).
type progress struct {
	on    bool
	tty   bool
	mu    sync.Mutex
	label string
	total int
	done  *atomic.Int64
	start time.Time
	quit  chan struct{}
	last  time.Time
}

func newProgress(on bool) *progress {
	_, err := unix.IoctlGetTermios(int(os.Stderr.Fd()), unix.TCGETS)
	p := &progress{on: on, tty: err == nil, quit: make(chan struct{})}
	if on {
		go p.loop()
	}
	return p
}

func (p *progress) loop() {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.quit:
			return
		case <-tick.C:
			p.print(false)
		}
	}
}

func (p *progress) line() string {
	if p.done == nil {
		return p.label
	}
	n := p.done.Load()
	el := time.Since(p.start)
	return fmt.Sprintf("%s %d/%d  %.1f/s  %.1fs", p.label, n, p.total, float64(n)/el.Seconds(), el.Seconds())
}

func (p *progress) print(final bool) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.label == "" {
		return
	}
	if p.tty {
		fmt.Fprintf(os.Stderr, "\r\033[K%s", p.line())
		if final {
			fmt.Fprintln(os.Stderr)
		}
		return
	}
	if final || time.Since(p.last) >= 5*time.Second {
		fmt.Fprintln(os.Stderr, p.line())
		p.last = time.Now()
	}
}

// set shows a message with no counter.
func (p *progress) set(label string) {
	p.mu.Lock()
	p.label, p.done = label, nil
	p.mu.Unlock()
	p.print(false)
}

// track follows a counter of done calls.
func (p *progress) track(label string, total int, done *atomic.Int64, start time.Time) {
	p.mu.Lock()
	p.label, p.total, p.done, p.start, p.last = label, total, done, start, time.Now()
	p.mu.Unlock()
}

// untrack prints the final state of the tracked phase.
func (p *progress) untrack() {
	p.print(true)
	p.mu.Lock()
	p.label, p.done = "", nil
	p.mu.Unlock()
}

// note prints a line of its own (a phase's summary), so a run stopped early still shows
// what it measured.
func (p *progress) note(line string) {
	if !p.on {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprintf(os.Stderr, "\r\033[K")
	}
	fmt.Fprintln(os.Stderr, line)
}

func (p *progress) stop() {
	close(p.quit)
	if p.tty && p.on {
		fmt.Fprint(os.Stderr, "\r\033[K")
	}
}
