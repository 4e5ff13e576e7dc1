package main

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, c := range []struct {
		lat  []time.Duration
		p    float64
		want float64
	}{
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 50, 5},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10},
		{ms(10, 0, 0, 20), 50, 10}, // failed calls (0) are left out
		{ms(7), 99, 7},
	} {
		if got := float64(percentile(c.lat, c.p)); got != c.want {
			t.Errorf("p%v of %v = %v, want %v", c.p, c.lat, got, c.want)
		}
	}
	if got := percentile(ms(0, 0), 50); !math.IsNaN(float64(got)) {
		t.Errorf("p50 of no successful call = %v, want NaN", got)
	}
}

func TestSummarizeAndRatios(t *testing.T) {
	s := &sample{
		add:   make([]time.Duration, 20),
		check: make([]time.Duration, 20),
		del:   make([]time.Duration, 20),
		wall:  map[string]time.Duration{"ADD": 2 * time.Second},
		execs: map[string]map[string]int{"ADD": {"bridge": 20, "host-local": 20, "iptables": 800}},
		calls: map[string]int{"ADD": 20, "CHECK": 20, "DEL": 20}, counted: true,
	}
	for i := range s.add {
		s.add[i] = time.Duration(10+i) * time.Millisecond
		s.check[i], s.del[i] = time.Millisecond, 2*time.Millisecond
	}
	m := summarize([]*sample{s}, 20)
	if m.AddPerSec != 10 || m.First10Mean != 10.5 || m.Last10Mean != 28.5 || m.ExecsPerAdd != 42 || m.OtherExecsPerAdd != 40 {
		t.Fatalf("summary %+v", m)
	}
	if r := ratios(m, m); r["addP50"] != 1 || r["addPerSec"] != 1 {
		t.Fatalf("ratios of a summary with itself: %v", r)
	}
	if b, err := num(math.NaN()).MarshalJSON(); err != nil || string(b) != "null" {
		t.Fatalf("NaN marshals as %s, %v", b, err)
	}
}

func TestParseFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		err  string
	}{
		{nil, ""},
		{[]string{"-backend", "pf"}, `-backend "pf"`},
		{[]string{"-pods", "5"}, "at least 10"},
		{[]string{"-cases", "serial,bogus"}, `unknown case "bogus"`},
		{[]string{"-scale"}, ""},
	} {
		o, err := parseFlags(c.args)
		if c.err == "" {
			if err != nil {
				t.Errorf("%v: %v", c.args, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.err)
		}
		_ = o
	}
	o, _ := parseFlags([]string{"-scale"})
	if !o.has("scale") || !o.has("serial") {
		t.Errorf("-scale: cases %q", o.cases)
	}
}
