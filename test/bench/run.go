package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cni-suite/cni-suite/test/internal/harness"
)

// Report is everything one run measured (the --json output).
type Report struct {
	Machine   Machine   `json:"machine"`
	Backend   string    `json:"backend"`
	Ours      Impl      `json:"ours"`
	Reference Impl      `json:"reference"`
	ExecCount string    `json:"execCount"` // how execs were counted, or why not
	Cases     []*Case   `json:"cases"`
	HostLocal []*HLCase `json:"hostLocal,omitempty"`
	counter   *harness.ExecCounter
	pods      []*harness.NS
	progress  *progress
}

// Impl is one side of the comparison.
type Impl struct {
	Label   string   `json:"label"`
	Dir     string   `json:"dir"`
	Version string   `json:"version,omitempty"`
	Missing []string `json:"missing,omitempty"` // plugins ours lacks: then Dir is the reference's
	Note    string   `json:"note,omitempty"`
}

// Case is one workload run on both sides.
type Case struct {
	Name        string   `json:"name"`
	Pods        int      `json:"pods"`
	Concurrency int      `json:"concurrency"`
	Backend     string   `json:"backend"`
	Ours        *Metrics `json:"ours"`
	Reference   *Metrics `json:"reference"`
	Ratio       Ratios   `json:"ratioOursToReference"`
}

// Metrics of one side of a case; latencies in milliseconds.
type Metrics struct {
	AddP50      num `json:"addP50"`
	AddP90      num `json:"addP90"`
	AddP99      num `json:"addP99"`
	CheckP50    num `json:"checkP50"`
	DelP50      num `json:"delP50"`
	DelP99      num `json:"delP99"`
	AddPerSec   num `json:"addPerSec"`
	First10Mean num `json:"first10Mean"` // mean ADD latency of the first 10% of pods (dispatch order)
	Last10Mean  num `json:"last10Mean"`  // of the last 10%
	Growth      num `json:"growth"`      // Last10Mean / First10Mean
	// Programs executed per call of each verb, all of them and those that are not one of
	// the plugin binaries (iptables, nft, ...); null when not counted.
	ExecsPerAdd      num                           `json:"execsPerAdd"`
	ExecsPerCheck    num                           `json:"execsPerCheck"`
	ExecsPerDel      num                           `json:"execsPerDel"`
	OtherExecsPerAdd num                           `json:"otherExecsPerAdd"`
	ExecsByProgram   map[string]map[string]float64 `json:"execsByProgram,omitempty"` // verb -> program -> per call
	ExecCountLost    bool                          `json:"execCountLost,omitempty"`
	Errors           map[string]int                `json:"errors,omitempty"`
	FirstError       map[string]string             `json:"firstError,omitempty"`
	LeftAfterDel     []string                      `json:"leftAfterDel,omitempty"`
	Rounds           int                           `json:"rounds"`
}

// Ratios are ours/reference for each metric, keyed by the metric's JSON name.
type Ratios map[string]num

var verbs = []string{"ADD", "CHECK", "DEL"}

func (r *Report) execute(o *options) error {
	if c, err := harness.NewExecCounter(); err != nil {
		r.ExecCount = "not counted: " + err.Error()
	} else {
		r.counter = c
		defer c.Close()
		r.ExecCount = "kernel process events connector (fork/exec of the benchmark's descendants)"
	}
	r.progress = newProgress(o.progress)
	defer r.progress.stop()

	var cases []*Case
	if o.has("serial") {
		cases = append(cases, &Case{Name: "serial", Pods: o.serialPods, Concurrency: 1, Backend: o.backend})
	}
	if o.has("concurrent") {
		cases = append(cases, &Case{Name: "concurrent", Pods: o.pods, Concurrency: o.conc, Backend: o.backend})
	}
	if o.has("scale") {
		cases = append(cases, &Case{Name: "scale", Pods: o.scalePods, Concurrency: o.conc, Backend: o.backend})
	}
	maxPods := 0
	for _, c := range cases {
		maxPods = max(maxPods, c.Pods)
	}
	if maxPods > 0 {
		r.progress.set(fmt.Sprintf("making %d pod namespaces", maxPods))
		pods, err := harness.NewNSBatch("bpod", maxPods)
		if err != nil {
			return err
		}
		track(pods...)
		r.pods = pods
	}
	sides := 2
	if o.only != "" {
		sides = 1
	}
	steps := len(cases) * sides * o.rounds
	step := 0
	for k, c := range cases {
		samples := map[string][]*sample{}
		for round := 0; round < o.rounds; round++ {
			order := []Impl{r.Reference, r.Ours}
			if (k+round)%2 == 1 {
				order = []Impl{r.Ours, r.Reference}
			}
			for _, im := range order {
				if o.only != "" && im.Label != o.only {
					continue
				}
				step++
				label := fmt.Sprintf("[%d/%d] %s %s", step, steps, im.Label, c.Name)
				s, err := r.runRound(label, im, c)
				if err != nil {
					return fmt.Errorf("%s: %w", label, err)
				}
				samples[im.Label] = append(samples[im.Label], s)
			}
		}
		c.Ours = summarize(samples["ours"], c.Pods)
		c.Reference = summarize(samples["reference"], c.Pods)
		c.Ratio = ratios(c.Ours, c.Reference)
		r.Cases = append(r.Cases, c)
	}
	if o.has("hostlocal") {
		sizes, err := o.sizes()
		if err != nil {
			return err
		}
		if err := r.hostLocal(sizes, o.hostlocalIters, o.only); err != nil {
			return fmt.Errorf("host-local micro-benchmark: %w", err)
		}
	}
	r.Machine.LoadEnd = loadAvg()
	return nil
}

// sample is one round of one case on one side.
type sample struct {
	add, check, del []time.Duration // by pod index; 0 when the call failed
	wall            map[string]time.Duration
	execs           map[string]map[string]int
	execLost        bool
	counted         bool
	calls           map[string]int
	errors          map[string]int
	firstErr        map[string]string
	left            []string
}

// runRound makes a fresh node, runs ADD for every pod, then CHECK, then DEL, each verb as a
// phase at the case's concurrency, and removes the node.
func (r *Report) runRound(label string, im Impl, c *Case) (*sample, error) {
	pods := r.pods[:c.Pods]
	// The pods of the previous round must be clean, or the comparison is not fair.
	for _, p := range pods {
		if has, err := harness.HasLink(p.Path, "eth0"); err != nil || has {
			return nil, fmt.Errorf("pod netns %s still holds eth0 from the previous round (err %v)", p.Name, err)
		}
	}
	node, err := harness.NewNS("bnode")
	if err != nil {
		return nil, err
	}
	track(node)
	defer node.Delete()
	tmp, err := os.MkdirTemp("", "cnis-bench-")
	if err != nil {
		return nil, err
	}
	trackDir(tmp)
	defer os.RemoveAll(tmp)
	dataDir := filepath.Join(tmp, "data")
	netw := harness.Net{DataDir: dataDir}
	if c.Backend == harness.NFTables {
		netw.Backend = harness.NFTables
	}
	rt, err := harness.NewRuntime(im.Dir, filepath.Join(tmp, "cache"), node.Path, netw.Conflist(), nil)
	if err != nil {
		return nil, err
	}
	sandboxes := make([]harness.Pod, c.Pods)
	ids := make([]string, c.Pods)
	for i, p := range pods {
		sandboxes[i] = harness.NewPod(i, p.Path)
		ids[i] = sandboxes[i].ID
	}
	s := &sample{
		add: make([]time.Duration, c.Pods), check: make([]time.Duration, c.Pods), del: make([]time.Duration, c.Pods),
		wall: map[string]time.Duration{}, execs: map[string]map[string]int{},
		calls: map[string]int{}, errors: map[string]int{}, firstErr: map[string]string{},
	}
	ctx := context.Background()
	added := make([]bool, c.Pods)
	ops := map[string]func(i int) error{
		"ADD": func(i int) error {
			_, err := rt.Add(ctx, sandboxes[i])
			added[i] = err == nil
			return err
		},
		"CHECK": func(i int) error { return rt.Check(ctx, sandboxes[i]) },
		"DEL":   func(i int) error { return rt.Del(ctx, sandboxes[i]) },
	}
	lat := map[string][]time.Duration{"ADD": s.add, "CHECK": s.check, "DEL": s.del}
	for _, verb := range verbs {
		var before map[string]int
		if r.counter != nil {
			if err := r.counter.Fence(); err != nil {
				return nil, err
			}
			before, _ = r.counter.Counts()
		}
		skip := func(i int) bool { return verb == "CHECK" && !added[i] }
		wall, errs := r.phase(fmt.Sprintf("%s %s", label, verb), c.Pods, c.Concurrency, skip, ops[verb], lat[verb])
		s.wall[verb] = wall
		for i := range errs {
			if !skip(i) {
				s.calls[verb]++
			}
		}
		for _, e := range errs {
			if e != nil {
				if s.errors[verb]++; s.firstErr[verb] == "" {
					s.firstErr[verb] = e.Error()
				}
			}
		}
		if r.counter != nil {
			d, lost, err := r.counter.Since(before)
			if err != nil {
				return nil, err
			}
			s.execs[verb], s.execLost, s.counted = d, s.execLost || lost, true
		}
	}
	st, err := harness.Capture(node.Name, dataDir)
	if err != nil {
		return nil, err
	}
	s.left = harness.Leftovers(st, ids)
	for _, p := range pods {
		if has, _ := harness.HasLink(p.Path, "eth0"); has {
			s.left = append(s.left, "pod "+p.Name+": eth0")
		}
	}
	return s, nil
}

// phase runs op for pods 0..n-1 (in that order of dispatch) on conc workers and records
// each call's latency; it returns the phase's wall time and each call's error.
func (r *Report) phase(label string, n, conc int, skip func(int) bool, op func(int) error, lat []time.Duration) (time.Duration, []error) {
	errs := make([]error, n)
	jobs := make(chan int)
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	r.progress.track(label, n, &done, start)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				t0 := time.Now()
				err := op(i)
				if err == nil {
					lat[i] = time.Since(t0)
				}
				errs[i] = err
				done.Add(1)
			}
		}()
	}
	for i := 0; i < n; i++ {
		if skip(i) {
			done.Add(1)
			continue
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	wall := time.Since(start)
	r.progress.untrack()
	tenth := max(1, n/10)
	r.progress.note(fmt.Sprintf("    p50 %s  p90 %s  p99 %s ms; first/last 10%% mean %s/%s ms",
		f(percentile(lat, 50), 1), f(percentile(lat, 90), 1), f(percentile(lat, 99), 1),
		f(mean(lat[:tenth]), 1), f(mean(lat[n-tenth:]), 1)))
	return wall, errs
}
