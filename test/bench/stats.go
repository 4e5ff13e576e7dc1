package main

import (
	"math"
	"sort"
	"strconv"
	"time"
)

// num is a float that is null in JSON when it is not a number (no samples, no reference).
type num float64

func (n num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return strconv.AppendFloat(nil, f, 'f', 3, 64), nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile is the nearest-rank percentile of the successful calls (non-zero latencies).
func percentile(lat []time.Duration, p float64) num {
	var v []time.Duration
	for _, d := range lat {
		if d > 0 {
			v = append(v, d)
		}
	}
	if len(v) == 0 {
		return num(math.NaN())
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	k := int(math.Ceil(p/100*float64(len(v)))) - 1
	return num(ms(v[max(0, min(k, len(v)-1))]))
}

func mean(lat []time.Duration) num {
	var sum time.Duration
	n := 0
	for _, d := range lat {
		if d > 0 {
			sum += d
			n++
		}
	}
	if n == 0 {
		return num(math.NaN())
	}
	return num(ms(sum) / float64(n))
}

// summarize pools the rounds of one side of a case.
func summarize(ss []*sample, pods int) *Metrics {
	m := &Metrics{Rounds: len(ss), Errors: map[string]int{}, FirstError: map[string]string{}}
	var add, check, del, first, last []time.Duration
	tenth := max(1, pods/10)
	var addWall time.Duration
	addOK := 0
	execs := map[string]map[string]int{}
	calls := map[string]int{}
	counted := len(ss) > 0
	for _, s := range ss {
		add = append(add, s.add...)
		check = append(check, s.check...)
		del = append(del, s.del...)
		first = append(first, s.add[:tenth]...)
		last = append(last, s.add[pods-tenth:]...)
		addWall += s.wall["ADD"]
		for _, d := range s.add {
			if d > 0 {
				addOK++
			}
		}
		for v, n := range s.errors {
			m.Errors[v] += n
		}
		for v, e := range s.firstErr {
			if m.FirstError[v] == "" {
				m.FirstError[v] = e
			}
		}
		m.LeftAfterDel = append(m.LeftAfterDel, s.left...)
		counted = counted && s.counted
		m.ExecCountLost = m.ExecCountLost || s.execLost
		for v, byProg := range s.execs {
			if execs[v] == nil {
				execs[v] = map[string]int{}
			}
			for p, n := range byProg {
				execs[v][p] += n
			}
		}
		for v, n := range s.calls {
			calls[v] += n
		}
	}
	m.AddP50, m.AddP90, m.AddP99 = percentile(add, 50), percentile(add, 90), percentile(add, 99)
	m.CheckP50 = percentile(check, 50)
	m.DelP50, m.DelP99 = percentile(del, 50), percentile(del, 99)
	m.AddPerSec = num(float64(addOK) / addWall.Seconds())
	m.First10Mean, m.Last10Mean = mean(first), mean(last)
	m.Growth = m.Last10Mean / m.First10Mean
	nan := num(math.NaN())
	m.ExecsPerAdd, m.ExecsPerCheck, m.ExecsPerDel, m.OtherExecsPerAdd = nan, nan, nan, nan
	if counted {
		m.ExecsByProgram = map[string]map[string]float64{}
		per := func(v string) num {
			total := 0
			m.ExecsByProgram[v] = map[string]float64{}
			for p, n := range execs[v] {
				total += n
				m.ExecsByProgram[v][p] = float64(n) / float64(max(1, calls[v]))
			}
			return num(float64(total) / float64(max(1, calls[v])))
		}
		m.ExecsPerAdd, m.ExecsPerCheck, m.ExecsPerDel = per("ADD"), per("CHECK"), per("DEL")
		other := 0
		for p, n := range execs["ADD"] {
			if !pluginNames[p] {
				other += n
			}
		}
		m.OtherExecsPerAdd = num(float64(other) / float64(max(1, calls["ADD"])))
	}
	return m
}

var pluginNames = map[string]bool{"bridge": true, "host-local": true, "portmap": true, "loopback": true}

// ratios are ours/reference, metric by metric (the keys name the Metrics fields).
func ratios(o, r *Metrics) Ratios {
	div := func(a, b num) num {
		if b == 0 || math.IsNaN(float64(a)) || math.IsNaN(float64(b)) || a < 0 || b < 0 {
			return num(math.NaN())
		}
		return a / b
	}
	return Ratios{
		"addP50": div(o.AddP50, r.AddP50), "addP90": div(o.AddP90, r.AddP90), "addP99": div(o.AddP99, r.AddP99),
		"checkP50": div(o.CheckP50, r.CheckP50),
		"delP50":   div(o.DelP50, r.DelP50), "delP99": div(o.DelP99, r.DelP99),
		"addPerSec":   div(o.AddPerSec, r.AddPerSec),
		"first10Mean": div(o.First10Mean, r.First10Mean), "last10Mean": div(o.Last10Mean, r.Last10Mean),
		"growth":      div(o.Growth, r.Growth),
		"execsPerAdd": div(o.ExecsPerAdd, r.ExecsPerAdd), "execsPerCheck": div(o.ExecsPerCheck, r.ExecsPerCheck),
		"execsPerDel": div(o.ExecsPerDel, r.ExecsPerDel), "otherExecsPerAdd": div(o.OtherExecsPerAdd, r.OtherExecsPerAdd),
	}
}
