package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cni-suite/cni-suite/test/internal/harness"
)

// probe runs one ADD, CHECK and DEL with each side on a scratch node, so a side that cannot
// run the workload at all stops the benchmark with its own error message rather than
// filling a table with failures. This is also where an unsupported backend shows up: until
// issue 17 lands, ours answers -backend nftables with "unsupported" (CNI error code 2).
func probe(rep *Report, backend string) error {
	sides := []Impl{rep.Reference}
	if len(rep.Ours.Missing) == 0 {
		sides = append(sides, rep.Ours)
	}
	for _, im := range sides {
		if err := probeOne(im, backend); err != nil {
			if im.Label == "ours" && backend == harness.NFTables {
				return fmt.Errorf("-backend nftables: ours (%s) cannot run it yet (nftables backends are issue 17): %w", im.Dir, err)
			}
			return fmt.Errorf("%s (%s) fails a single ADD/CHECK/DEL with -backend %s: %w", im.Label, im.Dir, backend, err)
		}
	}
	return nil
}

func probeOne(im Impl, backend string) (err error) {
	nss, err := harness.NewNSBatch("bprobe", 2)
	if err != nil {
		return err
	}
	track(nss...)
	defer harness.DeleteAll(nss)
	node, pod := nss[0], nss[1]
	tmp, err := os.MkdirTemp("", "cnis-bench-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	netw := harness.Net{DataDir: filepath.Join(tmp, "data")}
	if backend == harness.NFTables {
		netw.Backend = backend
	}
	rt, err := harness.NewRuntime(im.Dir, filepath.Join(tmp, "cache"), node.Path, netw.Conflist(), nil)
	if err != nil {
		return err
	}
	p := harness.NewPod(0, pod.Path)
	ctx := context.Background()
	if _, err := rt.Add(ctx, p); err != nil {
		return fmt.Errorf("ADD: %w (code %d)", err, harness.ErrorCode(err))
	}
	defer func() {
		if derr := rt.Del(ctx, p); derr != nil && err == nil {
			err = fmt.Errorf("DEL: %w", derr)
		}
	}()
	if err := rt.Check(ctx, p); err != nil {
		return fmt.Errorf("CHECK: %w", err)
	}
	return nil
}
