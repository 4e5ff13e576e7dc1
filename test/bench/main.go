// Command bench is `make bench`: it drives a bridge + host-local + portmap conflist through
// libcni exactly as a container runtime does, inside throwaway node and pod network
// namespaces, with the suite's plugins ("ours") and the reference plugins v1.9.1 in the same
// run, alternating, and prints latency, throughput, growth and exec counts side by side with
// the ratio ours/reference. See README.md of this directory for the flags and the method.
//
// It must run as root in the machine's root network namespace (the exec counter listens to
// the kernel's process connector, which lives there) and changes nothing there: every node
// is a netns named cnis-bnode-*, every pod a netns cnis-bpod-*, every plugin call is made
// from a thread locked inside the node netns, and all of them are removed on exit, also on
// failure and on SIGINT/SIGTERM.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/cni-suite/cni-suite/pkg/testenv"
	"github.com/cni-suite/cni-suite/test/internal/harness"
)

type options struct {
	pods, conc     int
	serialPods     int
	scale          bool
	scalePods      int
	rounds         int
	backend        string
	jsonOut        bool
	oursDir        string
	refDir         string
	cases          string
	hostlocalSizes string
	hostlocalIters int
	progress       bool
	only           string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.IntVar(&o.pods, "pods", 200, "pods in the concurrent case")
	fs.IntVar(&o.conc, "concurrency", 8, "concurrent runtime calls in the concurrent case")
	fs.IntVar(&o.serialPods, "serial-pods", 50, "pods in the serial (concurrency 1) case")
	fs.BoolVar(&o.scale, "scale", false, "also run the scale case (-scale-pods pods at -concurrency)")
	fs.IntVar(&o.scalePods, "scale-pods", 1000, "pods in the scale case")
	fs.IntVar(&o.rounds, "rounds", 1, "rounds per case and implementation (alternating order; samples pooled)")
	fs.StringVar(&o.backend, "backend", harness.IPTables, "netfilter backend of bridge ipMasq and portmap: iptables or nftables")
	fs.BoolVar(&o.jsonOut, "json", false, "print the results as JSON on stdout instead of the table")
	fs.StringVar(&o.oursDir, "ours", "", "plugin dir of ours (default: $CNI_SUITE_BIN, else a build of ./plugins/...)")
	fs.StringVar(&o.refDir, "ref", "", "plugin dir of the reference (default: testenv.RefPluginDir v1.9.1, built on first use)")
	fs.StringVar(&o.cases, "cases", "serial,concurrent,hostlocal", "cases to run, comma separated: serial, concurrent, hostlocal, scale")
	fs.StringVar(&o.hostlocalSizes, "hostlocal-sizes", "0,1000,60000", "reservations present in the host-local micro-benchmark")
	fs.IntVar(&o.hostlocalIters, "hostlocal-iters", 10, "ADD+DEL pairs per size and implementation in the host-local micro-benchmark")
	fs.BoolVar(&o.progress, "progress", true, "print a progress line on stderr")
	fs.StringVar(&o.only, "only", "", "run one side only: ours or reference (no ratios)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch o.backend {
	case harness.IPTables, harness.NFTables:
	default:
		return nil, fmt.Errorf("-backend %q: want iptables or nftables", o.backend)
	}
	if o.pods < 10 || o.serialPods < 10 || o.scalePods < 10 {
		return nil, errors.New("-pods, -serial-pods and -scale-pods must be at least 10 (first/last 10% need a pod each)")
	}
	if o.pods > 60000 || o.scalePods > 60000 {
		return nil, errors.New("at most 60000 pods (one /16 of host-local addresses, one host port each)")
	}
	if o.conc < 1 || o.rounds < 1 || o.hostlocalIters < 1 {
		return nil, errors.New("-concurrency, -rounds and -hostlocal-iters must be at least 1")
	}
	switch o.only {
	case "", "ours", "reference":
	default:
		return nil, fmt.Errorf("-only %q: want ours or reference", o.only)
	}
	if o.scale && !strings.Contains(o.cases, "scale") {
		o.cases += ",scale"
	}
	for _, c := range strings.Split(o.cases, ",") {
		switch c {
		case "serial", "concurrent", "hostlocal", "scale":
		default:
			return nil, fmt.Errorf("-cases: unknown case %q", c)
		}
	}
	return o, nil
}

func (o *options) has(c string) bool {
	for _, x := range strings.Split(o.cases, ",") {
		if x == c {
			return true
		}
	}
	return false
}

func (o *options) sizes() ([]int, error) {
	var out []int
	for _, s := range strings.Split(o.hostlocalSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 0 || n > 60000 {
			return nil, fmt.Errorf("-hostlocal-sizes: %q is not a count in 0..60000", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// cleanup holds what must go on exit: namespaces and temporary directories.
var cleanup struct {
	sync.Mutex
	ns   []*harness.NS
	dirs []string
}

func track(all ...*harness.NS) {
	cleanup.Lock()
	cleanup.ns = append(cleanup.ns, all...)
	cleanup.Unlock()
}

func trackDir(d string) {
	cleanup.Lock()
	cleanup.dirs = append(cleanup.dirs, d)
	cleanup.Unlock()
}

func cleanAll() {
	cleanup.Lock()
	defer cleanup.Unlock()
	if err := harness.DeleteAll(cleanup.ns); err != nil {
		fmt.Fprintln(os.Stderr, "bench: cleanup:", err)
	}
	cleanup.ns = nil
	for _, d := range cleanup.dirs {
		os.RemoveAll(d)
	}
	cleanup.dirs = nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "\nbench: %v: removing namespaces\n", s)
		cleanAll()
		os.Exit(130)
	}()
	code := run(o)
	cleanAll()
	os.Exit(code)
}

func run(o *options) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "bench: needs root (network namespaces, iptables inside them, the process connector)")
		return 2
	}
	rep, err := prepare(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	if err := rep.execute(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if o.jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	} else {
		rep.printTable(os.Stdout)
	}
	return 0
}

// prepare finds both plugin dirs and probes them.
func prepare(o *options) (*Report, error) {
	tb := harness.ProgramTB{Out: os.Stderr}
	rep := &Report{Machine: machineInfo(), Backend: o.backend}
	if o.refDir == "" {
		if err := harness.CatchFatal(func() { o.refDir = testenv.RefPluginDir(tb, testenv.RefVersion) }); err != nil {
			return nil, fmt.Errorf("reference plugins: %w", err)
		}
	}
	rep.Reference = Impl{Label: "reference", Dir: o.refDir, Version: testenv.RefVersion}
	if m := harness.HasPlugins(o.refDir, "bridge", "host-local", "portmap"); len(m) > 0 {
		return nil, fmt.Errorf("reference dir %s lacks %v", o.refDir, m)
	}
	if o.oursDir == "" {
		if err := harness.CatchFatal(func() { o.oursDir = testenv.PluginDir(tb) }); err != nil {
			return nil, fmt.Errorf("our plugins: %w", err)
		}
	}
	rep.Ours = Impl{Label: "ours", Dir: o.oursDir}
	if m := harness.HasPlugins(o.oursDir, "bridge", "host-local", "portmap"); len(m) > 0 {
		rep.Ours.Missing = m
		rep.Ours.Dir = o.refDir
		rep.Ours.Note = fmt.Sprintf("MISSING %s in %s: the reference v1.9.1 runs on both sides (harness sanity run; ratios should be about 1)",
			strings.Join(m, ", "), o.oursDir)
	}
	return rep, probe(rep, o.backend)
}
