package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Result is one row of the summary: a check of one runtime's flow.
type Result struct {
	Runtime string
	Check   string
	Err     error
	Skip    string // reason, when the check was not applicable in this run
	Dur     time.Duration
}

// Report collects results, printing each as it comes, and the summary table at the end.
type Report struct {
	mu      sync.Mutex
	out     io.Writer
	results []Result
}

func (r *Report) Add(res Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.results = append(r.results, res)
	status := "PASS"
	detail := ""
	switch {
	case res.Skip != "":
		status, detail = "SKIP", ": "+res.Skip
	case res.Err != nil:
		status, detail = "FAIL", ": "+res.Err.Error()
	}
	fmt.Fprintf(r.out, "e2e-k8s: [%s] %s %s (%s)%s\n", res.Runtime, status, res.Check, res.Dur.Round(10*time.Millisecond), detail)
}

// Counts returns passed, failed and skipped.
func (r *Report) Counts() (pass, fail, skip int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, res := range r.results {
		switch {
		case res.Skip != "":
			skip++
		case res.Err != nil:
			fail++
		default:
			pass++
		}
	}
	return
}

// Summary renders the table and the closing `N passed, M failed` line (", K skipped" when any).
func (r *Report) Summary() string {
	r.mu.Lock()
	rows := append([]Result(nil), r.results...)
	r.mu.Unlock()
	wRt, wCheck := len("RUNTIME"), len("CHECK")
	for _, res := range rows {
		wRt = max(wRt, len(res.Runtime))
		wCheck = max(wCheck, len(res.Check))
	}
	var b strings.Builder
	line := func(rt, check, result, dur string) {
		fmt.Fprintf(&b, "%-*s  %-*s  %-6s  %8s\n", wRt, rt, wCheck, check, result, dur)
	}
	line("RUNTIME", "CHECK", "RESULT", "TIME")
	for _, res := range rows {
		st := "pass"
		switch {
		case res.Skip != "":
			st = "skip"
		case res.Err != nil:
			st = "FAIL"
		}
		line(res.Runtime, res.Check, st, fmt.Sprintf("%.2fs", res.Dur.Seconds()))
	}
	pass, fail, skip := r.Counts()
	if skip > 0 {
		fmt.Fprintf(&b, "%d passed, %d failed, %d skipped\n", pass, fail, skip)
	} else {
		fmt.Fprintf(&b, "%d passed, %d failed\n", pass, fail)
	}
	return b.String()
}

// flow runs one runtime's checks in order. After a critical check fails, the later ones are
// still listed, as failures that did not run, so a broken setup never looks like fewer checks.
type flow struct {
	runtime string
	rep     *Report
	broken  string
}

func (f *flow) step(name string, critical bool, fn func() error) bool {
	if f.broken != "" {
		f.rep.Add(Result{Runtime: f.runtime, Check: name, Err: fmt.Errorf("not run: %q failed", f.broken)})
		return false
	}
	t := time.Now()
	err := fn()
	f.rep.Add(Result{Runtime: f.runtime, Check: name, Err: err, Dur: time.Since(t)})
	if err != nil && critical {
		f.broken = name
	}
	return err == nil
}

func (f *flow) skip(name, why string) {
	f.rep.Add(Result{Runtime: f.runtime, Check: name, Skip: why})
}
