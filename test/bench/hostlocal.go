package main

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cni-suite/cni-suite/test/internal/harness"
)

// HLCase is the host-local micro-benchmark at one number of reservations already present.
type HLCase struct {
	Reservations int       `json:"reservations"`
	Iterations   int       `json:"iterations"`
	Ours         HLMetrics `json:"ours"`
	Reference    HLMetrics `json:"reference"`
	Ratio        Ratios    `json:"ratioOursToReference"`
}

// HLMetrics are latencies of host-local alone (executed directly), in milliseconds.
type HLMetrics struct {
	AddP50     num    `json:"addP50"`
	DelP50     num    `json:"delP50"`
	Errors     int    `json:"errors,omitempty"`
	FirstError string `json:"firstError,omitempty"`
}

const hlNet = "cnis-hl"

// hostLocal times host-local ADD then DEL, serially, with a data dir that already holds n
// reservations (10.99.0.2 upwards, allocated in order as a long-lived node would have them,
// last_reserved_ip pointing at the last): the reference reads every reservation on DEL.
func (r *Report) hostLocal(sizes []int, iters int, only string) error {
	nss, err := harness.NewNSBatch("bhl", 2)
	if err != nil {
		return err
	}
	track(nss...)
	defer harness.DeleteAll(nss)
	node, pod := nss[0], nss[1]
	for k, n := range sizes {
		c := &HLCase{Reservations: n, Iterations: iters}
		order := []Impl{r.Reference, r.Ours}
		if k%2 == 1 {
			order = []Impl{r.Ours, r.Reference}
		}
		for _, im := range order {
			if only != "" && im.Label != only {
				m := HLMetrics{AddP50: num(math.NaN()), DelP50: num(math.NaN())}
				if im.Label == "ours" {
					c.Ours = m
				} else {
					c.Reference = m
				}
				continue
			}
			m, err := r.hostLocalOne(im, node, pod, n, iters)
			if err != nil {
				return err
			}
			if im.Label == "ours" {
				c.Ours = m
			} else {
				c.Reference = m
			}
		}
		div := func(a, b num) num { return a / b }
		c.Ratio = Ratios{"addP50": div(c.Ours.AddP50, c.Reference.AddP50), "delP50": div(c.Ours.DelP50, c.Reference.DelP50)}
		r.HostLocal = append(r.HostLocal, c)
	}
	return nil
}

func (r *Report) hostLocalOne(im Impl, node, pod *harness.NS, n, iters int) (HLMetrics, error) {
	var m HLMetrics
	tmp, err := os.MkdirTemp("", "cnis-bench-hl-")
	if err != nil {
		return m, err
	}
	trackDir(tmp)
	defer os.RemoveAll(tmp)
	r.progress.set(fmt.Sprintf("host-local %s: writing %d reservations", im.Label, n))
	if err := populate(filepath.Join(tmp, hlNet), n); err != nil {
		return m, err
	}
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.99.0.0/16"}]],"dataDir":%q}}`, hlNet, tmp))
	bin := filepath.Join(im.Dir, "host-local")
	add := make([]time.Duration, iters)
	del := make([]time.Duration, iters)
	call := func(cmd, id string) (time.Duration, error) {
		c := exec.Command(bin)
		c.Env = []string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + pod.Path,
			"CNI_IFNAME=eth0", "CNI_PATH=" + im.Dir, "PATH=" + os.Getenv("PATH")}
		c.Stdin = bytes.NewReader(conf)
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		var d time.Duration
		err := node.Do(func() error {
			t0 := time.Now()
			err := c.Run()
			d = time.Since(t0)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("host-local %s: %w: %s", cmd, err, out.Bytes())
		}
		return d, nil
	}
	var done int
	for j := 0; j < iters; j++ {
		r.progress.set(fmt.Sprintf("host-local %s, %d reservations: ADD+DEL %d/%d", im.Label, n, done, iters))
		id := fmt.Sprintf("cnishl%06d", j)
		d, err := call("ADD", id)
		if err != nil {
			if m.Errors++; m.FirstError == "" {
				m.FirstError = err.Error()
			}
			continue
		}
		add[j] = d
		if d, err = call("DEL", id); err != nil {
			if m.Errors++; m.FirstError == "" {
				m.FirstError = err.Error()
			}
			continue
		}
		del[j] = d
		done++
	}
	m.AddP50, m.DelP50 = percentile(add, 50), percentile(del, 50)
	r.progress.set("")
	return m, nil
}

// populate writes n reservations as host-local's on-disk format has them.
func populate(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ip := netip.MustParseAddr("10.99.0.2")
	last := ip
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, ip.String()), []byte(fmt.Sprintf("cnishlpre%06d\r\neth0", i)), 0o600); err != nil {
			return err
		}
		last, ip = ip, ip.Next()
	}
	if n > 0 {
		return os.WriteFile(filepath.Join(dir, "last_reserved_ip.0"), []byte(last.String()), 0o600)
	}
	return nil
}
