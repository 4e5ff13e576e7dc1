package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"github.com/cni-suite/cni-suite/pkg/crishim"
)

// 50 pods started at once get 50 distinct addresses; a restart of the shim (killed, as in a
// crash) keeps them, their IPs and their containers; removing them leaves nothing.
func TestConcurrentPodsSurviveRestart(t *testing.T) {
	s := startShim(t, shimOpts{conflist: bridgeConflist("")})
	const n = 50
	pods := make([]*pod, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cfg := s.podConfig(podOpts{name: fmt.Sprintf("p%02d", i)})
			id, err := s.rt.RunPodSandbox(context.Background(), cfg, "")
			if err != nil {
				errs <- fmt.Errorf("pod %d: %w", i, err)
				return
			}
			pods[i] = &pod{id: id, cfg: cfg}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	ips := func() map[string]string {
		list, err := s.rt.ListPodSandbox(ctxT(t), &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"suite": "crishim"},
			State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		seen := map[string]string{}
		for _, p := range list {
			st, err := s.rt.PodSandboxStatus(ctxT(t), p.Id, false)
			if err != nil {
				t.Fatal(err)
			}
			ip := st.GetStatus().GetNetwork().GetIp()
			if ip == "" || seen[ip] != "" {
				t.Fatalf("pod %s: IP %q (also %q)", p.Id, ip, seen[ip])
			}
			seen[ip], out[p.Id] = p.Id, ip
		}
		return out
	}
	before := ips()
	if len(before) != n {
		t.Fatalf("%d ready pods listed, want %d", len(before), n)
	}
	// Filters: an ID prefix (as crictl passes it), a state, labels.
	for _, f := range []struct {
		filter *runtimeapi.PodSandboxFilter
		want   int
	}{
		{&runtimeapi.PodSandboxFilter{Id: pods[3].id[:13]}, 1},
		{&runtimeapi.PodSandboxFilter{State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_NOTREADY}}, 0},
		{&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "p07"}}, 1},
		{&runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": "p07", "suite": "other"}}, 0},
	} {
		list, err := s.rt.ListPodSandbox(ctxT(t), f.filter)
		if err != nil || len(list) != f.want {
			t.Errorf("ListPodSandbox(%v): %d pods, %v; want %d", f.filter, len(list), err, f.want)
		}
	}
	ctr := s.runContainer(t, pods[0], "sleeper", []string{"sleep", "3600"})

	s.restart()
	after := ips()
	if fmt.Sprint(sorted(before)) != fmt.Sprint(sorted(after)) {
		t.Fatalf("pods or IPs changed across the restart:\nbefore %v\nafter  %v", before, after)
	}
	cs, err := s.rt.ContainerStatus(ctxT(t), ctr, false)
	if err != nil || cs.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container after restart: %v %v", cs.GetStatus().GetState(), err)
	}
	// The pod's network still works after the restart.
	if out := s.execSync(t, ctr, "ping", "-c1", "-W2", pods[1].ipOf(t, s)); !strings.Contains(out, "1 received") {
		t.Errorf("ping between pods after restart: %s", out)
	}
	// Removing with some concurrency, as kubelet does.
	var rwg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, p := range pods {
		rwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer rwg.Done()
			defer func() { <-sem }()
			if err := s.rt.StopPodSandbox(context.Background(), p.id); err != nil {
				t.Errorf("stop %s: %v", p.id, err)
			}
			if err := s.rt.RemovePodSandbox(context.Background(), p.id); err != nil {
				t.Errorf("remove %s: %v", p.id, err)
			}
		}()
	}
	rwg.Wait()
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

func (p *pod) ipOf(t *testing.T, s *shim) string {
	st, err := s.rt.PodSandboxStatus(ctxT(t), p.id, false)
	if err != nil {
		t.Fatal(err)
	}
	return st.GetStatus().GetNetwork().GetIp()
}

func sorted(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// Across a restart, a running container keeps running and logging, and its exit is recorded
// by its monitor; at start the shim runs CNI GC with the attachments it still owns and removes
// what belonged to a pod whose record vanished while it was down (infra process, netns,
// libcni cache entry).
func TestRestartGCAndOrphans(t *testing.T) {
	recDir := recorderDir(t)
	logFile := filepath.Join(t.TempDir(), "calls.jsonl")
	extra := fmt.Sprintf(`,{"type":%q,"logFile":%q,"capabilities":{"portMappings":true,"dns":true,"io.kubernetes.cri.pod-annotations":true}}`, recorderName, logFile)
	s := startShim(t, shimOpts{conflist: bridgeConflist(extra), binDirs: []string{testenvRef(t), recDir}})
	keep := s.runPod(t, podOpts{name: "keep", hostPort: 30090, ctrPort: 80})
	lost := s.runPod(t, podOpts{name: "lost"})
	ctr := s.runContainer(t, keep, "ticker", []string{"sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"})

	// The ADD the recorder saw carries what kubelet's runtimes send.
	var add recorded
	for _, r := range readRecords(t, logFile) {
		if r.Cmd == "ADD" && r.CID == keep.id {
			add = r
		}
	}
	wantArgs := "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=keep;K8S_POD_INFRA_CONTAINER_ID=" + keep.id + ";K8S_POD_UID=uid-keep"
	if add.Args != wantArgs || add.IfName != "eth0" || !strings.HasPrefix(add.Netns, s.netnsDir+"/") {
		t.Errorf("ADD env: args %q ifname %q netns %q", add.Args, add.IfName, add.Netns)
	}
	var addConf struct {
		RuntimeConfig json.RawMessage `json:"runtimeConfig"`
	}
	_ = json.Unmarshal(add.Stdin, &addConf)
	wantRC := `{"dns":{"options":["ndots:5"],"searches":["default.svc.cluster.local","svc.cluster.local"],"servers":["10.96.0.10"]},` +
		`"io.kubernetes.cri.pod-annotations":{"test":"yes"},"portMappings":[{"containerPort":80,"hostPort":30090,"protocol":"tcp"}]}`
	if string(addConf.RuntimeConfig) != wantRC {
		t.Errorf("ADD runtimeConfig:\n%s\nwant:\n%s", addConf.RuntimeConfig, wantRC)
	}

	logPath := filepath.Join(keep.cfg.LogDirectory, "ticker.log")
	ticks := func() int {
		b, _ := os.ReadFile(logPath)
		return strings.Count(string(b), " stdout F tick ")
	}
	waitFor(t, "ticker logging", func() error {
		if n := ticks(); n == 0 {
			return fmt.Errorf("no ticks in the log")
		}
		return nil
	})
	s.kill()
	// While the shim is down, the "lost" pod's record disappears.
	if err := os.RemoveAll(filepath.Join(s.stateDir, "sandboxes", lost.id)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the ticker keeps logging meanwhile
	s.start()

	var gc *recorded
	for _, r := range readRecords(t, logFile) {
		if r.Cmd == "GC" {
			gc = &r
		}
	}
	if gc == nil {
		t.Fatal("no CNI GC at start")
	}
	var gcConf struct {
		Valid []struct{ ContainerID, IfName string } `json:"cni.dev/valid-attachments"`
	}
	if err := json.Unmarshal(gc.Stdin, &gcConf); err != nil {
		t.Fatal(err)
	}
	if len(gcConf.Valid) != 1 || gcConf.Valid[0].ContainerID != keep.id || gcConf.Valid[0].IfName != "eth0" {
		t.Errorf("GC valid attachments %+v, want only %s/eth0", gcConf.Valid, keep.id)
	}
	// libcni's cache entry of the lost pod is gone with the GC, the kept one stays.
	cache, _ := filepath.Glob(filepath.Join(s.stateDir, "cni-cache", "results", "crishim-test-*"))
	if len(cache) != 1 || !strings.Contains(cache[0], keep.id) {
		t.Errorf("libcni cache after GC: %v", cache)
	}
	// The lost pod's infra process and netns are gone; the kept pod's are there.
	if fileExists(filepath.Join(s.netnsDir, "cni-"+lost.id[:32])) {
		t.Error("the lost pod's netns was not removed")
	}
	list, err := s.rt.ListPodSandbox(ctxT(t), nil)
	if err != nil || len(list) != 1 || list[0].Id != keep.id || list[0].State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pods after restart: %v %v", list, err)
	}

	// The container keeps logging after the restart; stopping it now records its exit.
	before := ticks()
	waitFor(t, "logging after the restart", func() error {
		if n := ticks(); n <= before {
			return fmt.Errorf("still %d ticks", n)
		}
		return nil
	})
	// Log rotation: kubelet renames the file and asks for a reopen; output goes to a new file.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := s.rt.ReopenContainerLog(ctxT(t), ctr); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "logging into the reopened file", func() error {
		if n := ticks(); n == 0 {
			return fmt.Errorf("no ticks in the new file")
		}
		return nil
	})
	if err := s.rt.StopContainer(ctxT(t), ctr, 0); err != nil {
		t.Fatal(err)
	}
	cs, _ := s.rt.ContainerStatus(ctxT(t), ctr, false)
	if cs.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || cs.GetStatus().GetExitCode() != 137 {
		t.Errorf("after SIGKILL: %v exit %d", cs.GetStatus().GetState(), cs.GetStatus().GetExitCode())
	}
	s.removePod(t, keep.id)
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
	// Stop and remove ran DEL (twice: remove repeats it) for the kept pod.
	dels := 0
	for _, r := range readRecords(t, logFile) {
		if r.Cmd == "DEL" && r.CID == keep.id {
			dels++
		}
	}
	if dels != 2 {
		t.Errorf("%d DELs for the removed pod, want 2 (stop and remove)", dels)
	}
}

// NetworkReady follows the conf dir (reloaded when it changes) and the network's CNI STATUS.
func TestNetworkReadiness(t *testing.T) {
	recDir := recorderDir(t)
	failFile := filepath.Join(t.TempDir(), "fail-status")
	s := startShim(t, shimOpts{binDirs: []string{testenvRef(t), recDir}})
	netReady := func() *runtimeapi.RuntimeCondition {
		st, err := s.rt.Status(ctxT(t), false)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.GetStatus().GetConditions() {
			if c.GetType() == runtimeapi.RuntimeReady && !c.GetStatus() {
				t.Fatalf("runtime not ready: %v", c)
			}
			if c.GetType() == runtimeapi.NetworkReady {
				return c
			}
		}
		t.Fatal("no NetworkReady condition")
		return nil
	}
	expectNotReady := func(fragment string) {
		t.Helper()
		c := netReady()
		if c.GetStatus() || c.GetReason() != "NetworkPluginNotReady" || !strings.Contains(c.GetMessage(), fragment) {
			t.Errorf("NetworkReady %v reason %q message %q, want not ready mentioning %q", c.GetStatus(), c.GetReason(), c.GetMessage(), fragment)
		}
	}
	expectNotReady("no network config found")
	if _, err := s.rt.RunPodSandbox(ctxT(t), s.podConfig(podOpts{name: "early"}), ""); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("RunPodSandbox without a network: %v", err)
	}
	// A broken first file is reported, not skipped.
	s.writeConf("05-broken.conflist", `{"cniVersion":"1.0.0","name":"broken","plugins":[]}`)
	s.writeConf("10-good.conflist", bridgeConflist(fmt.Sprintf(`,{"type":%q,"failStatusFile":%q}`, recorderName, failFile)))
	expectNotReady("05-broken.conflist")
	if err := os.Remove(filepath.Join(s.confDir, "05-broken.conflist")); err != nil {
		t.Fatal(err)
	}
	if c := netReady(); !c.GetStatus() {
		t.Fatalf("valid config not picked up: %v", c)
	}
	// A failing CNI STATUS makes the network not ready.
	if err := os.WriteFile(failFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	expectNotReady("told to fail STATUS")
	os.Remove(failFile)
	if c := netReady(); !c.GetStatus() {
		t.Fatalf("network not ready again after STATUS recovered: %v", c)
	}
	// Host-network pods need no CNI at all.
	p := s.runPod(t, podOpts{name: "hostnet", hostNet: true})
	if p.ip != "" {
		t.Errorf("host-network pod got IP %q from the shim", p.ip)
	}
	ctr := s.runContainer(t, p, "c", []string{"sleep", "3600"})
	host, _ := os.Hostname()
	if got := strings.TrimSpace(s.execSync(t, ctr, "hostname")); got != host {
		t.Errorf("host-network pod hostname %q, want the node's %q", got, host)
	}
	var nodeNS syscall.Stat_t
	if err := syscall.Stat(s.node.Path, &nodeNS); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(s.execSync(t, ctr, "readlink", "/proc/self/ns/net")), fmt.Sprintf("net:[%d]", nodeNS.Ino); got != want {
		t.Errorf("host-network pod is in netns %s, want the node's %s", got, want)
	}
	s.removePod(t, p.id)
}

// A failed ADD is undone: DEL runs, the sandbox is not kept, no netns or process is left.
func TestFailedAddRollsBack(t *testing.T) {
	// A range of one address: the second pod cannot get one.
	conf := strings.Replace(bridgeConflist(""), `{"subnet":"10.77.0.0/24"}`, `{"subnet":"10.77.0.0/24","rangeStart":"10.77.0.10","rangeEnd":"10.77.0.10"}`, 1)
	s := startShim(t, shimOpts{conflist: conf})
	first := s.runPod(t, podOpts{name: "first"})
	_, err := s.rt.RunPodSandbox(ctxT(t), s.podConfig(podOpts{name: "second"}), "")
	if err == nil || !strings.Contains(err.Error(), "no IP addresses available") {
		t.Fatalf("second pod in a full range: %v", err)
	}
	list, _ := s.rt.ListPodSandbox(ctxT(t), nil)
	if len(list) != 1 || list[0].Id != first.id {
		t.Errorf("pods after a failed ADD: %v", list)
	}
	ents, _ := os.ReadDir(s.netnsDir)
	if len(ents) != 1 {
		t.Errorf("netns files after a failed ADD: %d, want 1", len(ents))
	}
	ents, _ = os.ReadDir(filepath.Join(s.stateDir, "sandboxes"))
	if len(ents) != 1 {
		t.Errorf("sandbox records after a failed ADD: %d, want 1", len(ents))
	}
	// The same name can be used again once the range has room.
	s.removePod(t, first.id)
	second := s.runPod(t, podOpts{name: "second"})
	if second.ip != "10.77.0.10" {
		t.Errorf("second pod IP %q", second.ip)
	}
	s.removePod(t, second.id)
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

// Container states, stop timeouts (TERM, then KILL), exit codes, a pod PID namespace, and
// ExecSync's timeout.
func TestContainerLifecycle(t *testing.T) {
	s := startShim(t, shimOpts{conflist: bridgeConflist("")})
	ctx := ctxT(t)
	p := s.runPod(t, podOpts{name: "life", pidPod: true})
	cfg := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: "exits"},
		Image:      &runtimeapi.ImageSpec{Image: "busybox"},
		Command:    []string{"sh", "-c"},
		Args:       []string{"pwd; echo to-stderr >&2; exit 7"},
		WorkingDir: "/tmp",
		LogPath:    "exits.log",
	}
	id, err := s.rt.CreateContainer(ctx, p.id, cfg, p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	state := func(id string) *runtimeapi.ContainerStatus {
		cs, err := s.rt.ContainerStatus(ctx, id, false)
		if err != nil {
			t.Fatal(err)
		}
		return cs.GetStatus()
	}
	if st := state(id); st.State != runtimeapi.ContainerState_CONTAINER_CREATED || st.CreatedAt == 0 || st.StartedAt != 0 {
		t.Errorf("created: %v", st)
	}
	if _, err := s.rt.CreateContainer(ctx, p.id, cfg, p.cfg); status.Code(err) != codes.AlreadyExists {
		t.Errorf("same container name twice: %v", err)
	}
	if err := s.rt.StartContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "container exit", func() error {
		if st := state(id); st.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("state %v", st.State)
		}
		return nil
	})
	st := state(id)
	if st.ExitCode != 7 || st.Reason != "Error" || st.StartedAt == 0 || st.FinishedAt < st.StartedAt {
		t.Errorf("exited: %v", st)
	}
	b, _ := os.ReadFile(filepath.Join(p.cfg.LogDirectory, "exits.log"))
	if !strings.Contains(string(b), " stdout F /tmp\n") || !strings.Contains(string(b), " stderr F to-stderr\n") {
		t.Errorf("log: %q", b)
	}
	if err := s.rt.StartContainer(ctx, id); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("starting an exited container: %v", err)
	}

	// A command that does not exist: the start fails and the container is EXITED (StartError).
	bad, err := s.rt.CreateContainer(ctx, p.id, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "bad"}, Image: &runtimeapi.ImageSpec{Image: "x"}, Command: []string{"no-such-command-here"},
	}, p.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.rt.StartContainer(ctx, bad); err == nil || !strings.Contains(err.Error(), "no-such-command-here") {
		t.Errorf("start of a missing command: %v", err)
	}
	if st := state(bad); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.Reason != "StartError" || st.ExitCode != 128 {
		t.Errorf("failed start: %v", st)
	}

	// SIGTERM ignored: the stop timeout runs out, then SIGKILL.
	stubborn := s.runContainer(t, p, "stubborn", []string{testBinary(t), "__helper", "ignore-term"})
	waitFor(t, "stubborn running", func() error {
		b, _ := os.ReadFile(filepath.Join(p.cfg.LogDirectory, "stubborn.log"))
		if !strings.Contains(string(b), "ignoring SIGTERM") {
			return fmt.Errorf("log %q", b)
		}
		return nil
	})
	// In the pod's PID namespace, the infra process is PID 1.
	if out := s.execSync(t, stubborn, "cat", "/proc/1/cmdline"); !strings.Contains(out, "__pause") {
		t.Errorf("PID 1 in the pod: %q", out)
	}
	start := time.Now()
	if err := s.rt.StopContainer(ctx, stubborn, 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("stop returned after %v, before the 1s timeout", d)
	}
	if st := state(stubborn); st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 137 {
		t.Errorf("after the stop timeout: %v", st)
	}

	// ExecSync's timeout kills the command and answers an error.
	runner := s.runContainer(t, p, "runner", []string{"sleep", "3600"})
	start = time.Now()
	_, _, err = s.rt.ExecSync(ctx, runner, []string{"sleep", "30"}, time.Second)
	if err == nil || time.Since(start) > 10*time.Second {
		t.Errorf("ExecSync past its timeout: %v after %v", err, time.Since(start))
	}
	if out := s.execSync(t, runner, "sh", "-c", "pgrep -x sleep | wc -l"); strings.TrimSpace(out) != "1" {
		t.Errorf("the timed-out exec's process was not killed: %d sleeps", len(out))
	}
	// List filters: by pod, state and labels.
	list, err := s.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: p.id,
		State: &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}})
	if err != nil || len(list) != 1 || list[0].Id != runner {
		t.Errorf("running containers: %v %v", list, err)
	}
	list, _ = s.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: map[string]string{"container": "stubborn"}})
	if len(list) != 1 || list[0].Id != stubborn {
		t.Errorf("containers labelled stubborn: %v", list)
	}
	// Stats, as kubelet's summary and eviction managers ask for them: every container, no usage.
	all, _ := s.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: p.id})
	stats, err := s.rt.ListContainerStats(ctx, &runtimeapi.ContainerStatsFilter{PodSandboxId: p.id})
	if err != nil || len(stats) != len(all) || len(all) == 0 {
		t.Errorf("container stats of the pod: %d entries, %v (want %d)", len(stats), err, len(all))
	}
	if st, err := s.rt.ContainerStats(ctx, runner); err != nil || st.GetAttributes().GetId() != runner || st.GetCpu().GetTimestamp() == 0 {
		t.Errorf("stats of %s: %v %v", runner, st, err)
	}
	if ps, err := s.rt.ListPodSandboxStats(ctx, &runtimeapi.PodSandboxStatsFilter{Id: p.id}); err != nil || len(ps) != 1 || len(ps[0].GetLinux().GetContainers()) != len(all) {
		t.Errorf("pod stats: %v %v", ps, err)
	}
	if err := s.rt.RemoveContainer(ctx, runner); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rt.ContainerStatus(ctx, runner, false); status.Code(err) != codes.NotFound {
		t.Errorf("status of a removed container: %v", err)
	}
	s.removePod(t, p.id)
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

// Malformed and unknown requests get gRPC errors, never a crash; images are recorded names.
func TestBadRequestsAndImages(t *testing.T) {
	s := startShim(t, shimOpts{conflist: bridgeConflist("")})
	ctx := ctxT(t)
	cases := []struct {
		name string
		call func() error
		code codes.Code
	}{
		{"no sandbox config", func() error { _, err := s.rt.RunPodSandbox(ctx, nil, ""); return err }, codes.InvalidArgument},
		{"no metadata", func() error {
			_, err := s.rt.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{Hostname: "x"}, "")
			return err
		}, codes.InvalidArgument},
		{"no uid", func() error {
			_, err := s.rt.RunPodSandbox(ctx, &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "a", Namespace: "b"}}, "")
			return err
		}, codes.InvalidArgument},
		{"container in unknown pod", func() error {
			_, err := s.rt.CreateContainer(ctx, "deadbeef", &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"true"}}, nil)
			return err
		}, codes.NotFound},
		{"container without command", func() error {
			_, err := s.rt.CreateContainer(ctx, "deadbeef", &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}}, nil)
			return err
		}, codes.InvalidArgument},
		{"status of unknown pod", func() error { _, err := s.rt.PodSandboxStatus(ctx, "nope", false); return err }, codes.NotFound},
		{"exec in unknown container", func() error { _, _, err := s.rt.ExecSync(ctx, "nope", []string{"true"}, time.Second); return err }, codes.NotFound},
		{"start unknown container", func() error { return s.rt.StartContainer(ctx, "nope") }, codes.NotFound},
		{"unimplemented", func() error {
			return s.rt.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: "x"})
		}, codes.Unimplemented},
		{"stop unknown pod", func() error { return s.rt.StopPodSandbox(ctx, "nope") }, codes.OK},
		{"remove unknown pod", func() error { return s.rt.RemovePodSandbox(ctx, "nope") }, codes.OK},
		{"stop unknown container", func() error { return s.rt.StopContainer(ctx, "nope", 1) }, codes.OK},
		{"remove unknown container", func() error { return s.rt.RemoveContainer(ctx, "nope") }, codes.OK},
	}
	for _, c := range cases {
		if err := c.call(); status.Code(err) != c.code {
			t.Errorf("%s: %v, want code %v", c.name, err, c.code)
		} else if c.code == codes.Unimplemented && !strings.Contains(err.Error(), "crishim does not implement CheckpointContainer") {
			t.Errorf("%s: unclear message %v", c.name, err)
		}
	}
	// Bytes that are not a protobuf message at all.
	conn, err := grpc.NewClient("unix://"+s.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var out []byte
	err = conn.Invoke(ctx, "/runtime.v1.RuntimeService/RunPodSandbox", []byte{0xff, 0xff, 0xff, 0x01, 0x02}, &out, grpc.ForceCodecV2(rawCodec{}))
	if code := status.Code(err); code == codes.OK || code == codes.Unavailable {
		t.Errorf("garbage request: %v", err)
	}
	if _, err := s.rt.Version(ctx, "v1"); err != nil {
		t.Fatalf("shim gone after bad requests: %v", err)
	}

	// The streaming list RPCs (what the client uses with CRIListStreaming) answer like the lists.
	p := s.runPod(t, podOpts{name: "listed"})
	s.runContainer(t, p, "c", []string{"sleep", "3600"})
	streamRT, err := remote.NewRemoteRuntimeService(ctx, "unix://"+s.sock, time.Minute, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer streamRT.Close(ctx)
	if pods, err := streamRT.ListPodSandbox(ctx, nil); err != nil || len(pods) != 1 || pods[0].Id != p.id {
		t.Errorf("streamed pods: %v %v", pods, err)
	}
	if ctrs, err := streamRT.ListContainers(ctx, nil); err != nil || len(ctrs) != 1 {
		t.Errorf("streamed containers: %v %v", ctrs, err)
	}
	s.removePod(t, p.id)

	// Images: recorded, listed, found by name or ID, removed; nothing pulled.
	ref, err := s.img.PullImage(ctx, &runtimeapi.ImageSpec{Image: "busybox"}, nil, nil)
	if err != nil || !strings.HasPrefix(ref, "sha256:") {
		t.Fatalf("pull: %q %v", ref, err)
	}
	img, err := s.img.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: "docker.io/library/busybox:latest"}, false)
	if err != nil || img.GetImage().GetId() != ref {
		t.Errorf("image status: %v %v", img, err)
	}
	if img, err := s.img.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: "never-pulled"}, false); err != nil || img.GetImage() != nil {
		t.Errorf("status of an unknown image: %v %v", img, err)
	}
	imgs, err := s.img.ListImages(ctx, &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "busybox"}})
	if err != nil || len(imgs) != 1 || imgs[0].RepoTags[0] != "docker.io/library/busybox:latest" {
		t.Errorf("images: %v %v", imgs, err)
	}
	if fs, err := s.img.ImageFsInfo(ctx); err != nil || len(fs.GetImageFilesystems()) != 1 {
		t.Errorf("image fs info: %v %v", fs, err)
	}
	if err := s.img.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if err := s.img.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: ref}); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if imgs, _ := s.img.ListImages(ctx, &runtimeapi.ImageFilter{Image: &runtimeapi.ImageSpec{Image: "busybox"}}); len(imgs) != 0 {
		t.Errorf("images after remove: %v", imgs)
	}
}

type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// A shim killed while pods are being made leaves nothing half made: at the next start every
// listed pod is ready with an address, and netns, infra processes and reservations match them.
func TestKilledDuringRunPodSandbox(t *testing.T) {
	s := startShim(t, shimOpts{conflist: bridgeConflist("")})
	for round := range 2 {
		var wg sync.WaitGroup
		for i := range 12 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = s.rt.RunPodSandbox(context.Background(), s.podConfig(podOpts{name: fmt.Sprintf("r%d-%d", round, i)}), "")
			}()
		}
		// Kill once a few are ready, while the others are on their way.
		waitFor(t, "some pods ready", func() error {
			l, err := s.rt.ListPodSandbox(ctxT(t), nil)
			n := 0
			for _, p := range l {
				if strings.HasPrefix(p.GetMetadata().GetName(), fmt.Sprintf("r%d-", round)) {
					n++
				}
			}
			if err != nil || n < 1 {
				return fmt.Errorf("%d ready, %v", n, err)
			}
			return nil
		})
		s.kill()
		wg.Wait()
		s.start()
		list, err := s.rt.ListPodSandbox(ctxT(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		netns, _ := os.ReadDir(s.netnsDir)
		resv, _ := filepath.Glob(filepath.Join(s.dataDir, "crishim-test", "10.*"))
		t.Logf("round %d: %d pods survived the kill, %d half-made ones undone", round, len(list), strings.Count(s.log(), "undoing sandbox"))
		for _, p := range list {
			st, err := s.rt.PodSandboxStatus(ctxT(t), p.Id, false)
			if err != nil || p.State != runtimeapi.PodSandboxState_SANDBOX_READY || st.GetStatus().GetNetwork().GetIp() == "" {
				t.Errorf("pod %s after the kill: %v ip %q %v", p.Id, p.State, st.GetStatus().GetNetwork().GetIp(), err)
			}
		}
		pauses := 0
		for _, pid := range crishim.ProcessesWithArg(s.stateDir) {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(b), crishim.PauseArg) {
				pauses++
			}
		}
		if len(netns) != len(list) || len(resv) != len(list) || pauses != len(list) {
			t.Errorf("round %d: %d pods, %d netns, %d reservations, %d infra processes", round, len(list), len(netns), len(resv), pauses)
		}
	}
	for _, p := range mustList(t, s) {
		s.removePod(t, p)
	}
	if left := s.leftovers(t); len(left) > 0 {
		t.Errorf("left behind:\n%s", strings.Join(left, "\n"))
	}
}

func mustList(t *testing.T, s *shim) []string {
	list, err := s.rt.ListPodSandbox(ctxT(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range list {
		ids = append(ids, p.Id)
	}
	return ids
}
