package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
)

func f(v num, prec int) string {
	x := float64(v)
	if math.IsNaN(x) || math.IsInf(x, 0) || x < 0 {
		return "-"
	}
	return fmt.Sprintf("%.*f", prec, x)
}

// goal says what DESIGN.md asks of a metric in a case: value(c) at most (or, with atLeast,
// at least) limit.
type goal struct {
	text    string
	value   func(c *Case) num
	limit   float64
	atLeast bool
}

func (g goal) verdict(c *Case) string {
	v := float64(g.value(c))
	switch {
	case math.IsNaN(v) || v < 0:
		return g.text + " n/a"
	case g.atLeast && v >= g.limit, !g.atLeast && v <= g.limit:
		return g.text + " met"
	}
	return g.text + " missed"
}

var goals = map[string]map[string]goal{
	"serial": {
		"ADD p50 ms": {"ratio ≤ 0.167", func(c *Case) num { return c.Ratio["addP50"] }, 1.0 / 6, false},
		"DEL p50 ms": {"ratio ≤ 0.10", func(c *Case) num { return c.Ratio["delP50"] }, 0.1, false},
	},
	"concurrent": {
		"ADD/s":          {"ratio ≥ 10", func(c *Case) num { return c.Ratio["addPerSec"] }, 10, true},
		"last/first 10%": {"ours ≤ 1.5", func(c *Case) num { return c.Ours.Growth }, 1.5, false},
	},
	"scale": {
		"last/first 10%": {"ours ≤ 1.5", func(c *Case) num { return c.Ours.Growth }, 1.5, false},
	},
}

func (r *Report) printTable(w io.Writer) {
	fmt.Fprintf(w, "bridge + host-local + portmap through libcni, backend %s\n", r.Backend)
	fmt.Fprintf(w, "machine: %d CPUs %s, kernel %s, %s, %s; load avg %s at start, %s at end\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.Kernel, r.Machine.IPTables, r.Machine.Go, r.Machine.LoadStart, r.Machine.LoadEnd)
	fmt.Fprintf(w, "reference: %s %s\n", r.Reference.Version, r.Reference.Dir)
	if r.Ours.Note != "" {
		fmt.Fprintf(w, "ours:      %s\n", r.Ours.Note)
	} else {
		fmt.Fprintf(w, "ours:      %s\n", r.Ours.Dir)
	}
	fmt.Fprintf(w, "execs:     %s\n", r.ExecCount)
	for _, c := range r.Cases {
		fmt.Fprintf(w, "\n== %s: %d pods, concurrency %d, two port mappings each (tcp+udp); %d round(s) per side\n",
			c.Name, c.Pods, c.Concurrency, max(c.Ours.Rounds, c.Reference.Rounds))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "metric\tours\treference\tours/ref\tgoal\t")
		o, rf := c.Ours, c.Reference
		row := func(name string, a, b, ratio num, prec int) {
			g := ""
			if gl, ok := goals[c.Name][name]; ok {
				g = gl.verdict(c)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t\n", name, f(a, prec), f(b, prec), f(ratio, 2), g)
		}
		row("ADD p50 ms", o.AddP50, rf.AddP50, c.Ratio["addP50"], 1)
		row("ADD p90 ms", o.AddP90, rf.AddP90, c.Ratio["addP90"], 1)
		row("ADD p99 ms", o.AddP99, rf.AddP99, c.Ratio["addP99"], 1)
		row("CHECK p50 ms", o.CheckP50, rf.CheckP50, c.Ratio["checkP50"], 1)
		row("DEL p50 ms", o.DelP50, rf.DelP50, c.Ratio["delP50"], 1)
		row("DEL p99 ms", o.DelP99, rf.DelP99, c.Ratio["delP99"], 1)
		row("ADD/s", o.AddPerSec, rf.AddPerSec, c.Ratio["addPerSec"], 1)
		row("first 10% ADD mean ms", o.First10Mean, rf.First10Mean, c.Ratio["first10Mean"], 1)
		row("last 10% ADD mean ms", o.Last10Mean, rf.Last10Mean, c.Ratio["last10Mean"], 1)
		row("last/first 10%", o.Growth, rf.Growth, c.Ratio["growth"], 2)
		row("execs per ADD", o.ExecsPerAdd, rf.ExecsPerAdd, c.Ratio["execsPerAdd"], 1)
		row("  not plugins", o.OtherExecsPerAdd, rf.OtherExecsPerAdd, c.Ratio["otherExecsPerAdd"], 1)
		row("execs per CHECK", o.ExecsPerCheck, rf.ExecsPerCheck, c.Ratio["execsPerCheck"], 1)
		row("execs per DEL", o.ExecsPerDel, rf.ExecsPerDel, c.Ratio["execsPerDel"], 1)
		fmt.Fprintf(tw, "errors ADD/CHECK/DEL\t%s\t%s\t\t\t\n", errs(o), errs(rf))
		fmt.Fprintf(tw, "left after DEL\t%d\t%d\t\t\t\n", len(o.LeftAfterDel), len(rf.LeftAfterDel))
		tw.Flush()
		for _, side := range []struct {
			label string
			m     *Metrics
		}{{"ours", o}, {"reference", rf}} {
			if side.m.ExecsByProgram != nil {
				fmt.Fprintf(w, "  %s execs per ADD by program: %s\n", side.label, byProgram(side.m.ExecsByProgram["ADD"]))
				fmt.Fprintf(w, "  %s execs per DEL by program: %s\n", side.label, byProgram(side.m.ExecsByProgram["DEL"]))
			}
			if side.m.ExecCountLost {
				fmt.Fprintf(w, "  %s: process events were lost (counts are lower bounds)\n", side.label)
			}
			for _, v := range verbs {
				if e := side.m.FirstError[v]; e != "" {
					fmt.Fprintf(w, "  %s first %s error: %s\n", side.label, v, e)
				}
			}
			for i, l := range side.m.LeftAfterDel {
				if i == 5 {
					fmt.Fprintf(w, "  %s left ... and %d more\n", side.label, len(side.m.LeftAfterDel)-5)
					break
				}
				fmt.Fprintf(w, "  %s left: %s\n", side.label, l)
			}
		}
	}
	if len(r.HostLocal) > 0 {
		fmt.Fprintf(w, "\n== host-local alone (exec'd directly), ADD then DEL, serial, with N reservations present\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "reservations\tours ADD p50 ms\tref ADD p50 ms\tours/ref\tours DEL p50 ms\tref DEL p50 ms\tours/ref\t")
		for _, h := range r.HostLocal {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t\n", h.Reservations,
				f(h.Ours.AddP50, 2), f(h.Reference.AddP50, 2), f(h.Ratio["addP50"], 2),
				f(h.Ours.DelP50, 2), f(h.Reference.DelP50, 2), f(h.Ratio["delP50"], 2))
		}
		tw.Flush()
		for _, h := range r.HostLocal {
			for _, side := range []struct {
				l string
				m HLMetrics
			}{{"ours", h.Ours}, {"reference", h.Reference}} {
				if side.m.Errors > 0 {
					fmt.Fprintf(w, "  %d reservations, %s: %d errors, first: %s\n", h.Reservations, side.l, side.m.Errors, side.m.FirstError)
				}
			}
		}
	}
}

func errs(m *Metrics) string {
	return fmt.Sprintf("%d/%d/%d", m.Errors["ADD"], m.Errors["CHECK"], m.Errors["DEL"])
}

func byProgram(m map[string]float64) string {
	type kv struct {
		k string
		v float64
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].v != all[j].v {
			return all[i].v > all[j].v
		}
		return all[i].k < all[j].k
	})
	var parts []string
	for _, x := range all {
		parts = append(parts, fmt.Sprintf("%s %.1f", x.k, x.v))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
