package crishim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// cniTimeout bounds one CNI verb: it runs detached from the caller's context, so that a
// client giving up half way through ADD does not leave a half-made attachment behind.
const cniTimeout = 2 * time.Minute

type sandbox struct {
	mu  sync.Mutex // serialises Run/Stop/Remove and container starts of this pod
	rec sandboxRecord
	cfg *runtimeapi.PodSandboxConfig
	dir string
}

func (sb *sandbox) save() error { return writeJSON(filepath.Join(sb.dir, "sandbox.json"), &sb.rec) }

func (sb *sandbox) nsOpts() *runtimeapi.NamespaceOption {
	return sb.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
}

func (sb *sandbox) ready() bool { return sb.rec.State == sbReady && sb.rec.Pause.alive() }

func (sb *sandbox) podNet() podNetwork {
	return podNetwork{id: sb.rec.ID, netns: sb.rec.NetNS, config: sb.cfg}
}

func sandboxKey(md *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s_%s_%s_%d", md.GetName(), md.GetNamespace(), md.GetUid(), md.GetAttempt())
}

func (s *Server) reserveName(key, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if other, ok := s.names[key]; ok && other != id {
		return status.Errorf(codes.AlreadyExists, "name %q is reserved for %s", key, other)
	}
	s.names[key] = id
	return nil
}

func (s *Server) releaseName(key, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[key] == id {
		delete(s.names, key)
	}
}

// lookupSandbox resolves a full ID or a unique prefix of one (as crictl passes them).
func (s *Server) lookupSandbox(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return lookupByID(s.sandboxes, id, "pod sandbox")
}

// lookupByID finds an entry by its full ID or an unambiguous prefix of it, as crictl lets
// users abbreviate IDs; the caller holds s.mu.
func lookupByID[T any](m map[string]T, id, kind string) (T, error) {
	var found T
	if id == "" {
		return found, status.Errorf(codes.InvalidArgument, "%s ID is empty", kind)
	}
	if v, ok := m[id]; ok {
		return v, nil
	}
	n := 0
	for k, v := range m {
		if strings.HasPrefix(k, id) {
			found, n = v, n+1
		}
	}
	switch n {
	case 0:
		return found, status.Errorf(codes.NotFound, "%s %q not found", kind, id)
	case 1:
		return found, nil
	}
	var zero T
	return zero, status.Errorf(codes.InvalidArgument, "%s ID prefix %q is ambiguous", kind, id)
}

func validateSandboxConfig(cfg *runtimeapi.PodSandboxConfig) error {
	if cfg == nil {
		return status.Error(codes.InvalidArgument, "pod sandbox config is missing")
	}
	md := cfg.GetMetadata()
	if md == nil {
		return status.Error(codes.InvalidArgument, "pod sandbox config has no metadata")
	}
	for field, v := range map[string]string{"metadata.name": md.GetName(), "metadata.namespace": md.GetNamespace(), "metadata.uid": md.GetUid()} {
		if v == "" {
			return status.Errorf(codes.InvalidArgument, "pod sandbox config: %s is empty", field)
		}
	}
	if h := cfg.GetHostname(); len(h) > 64 || strings.ContainsAny(h, "/\x00 ") {
		return status.Errorf(codes.InvalidArgument, "pod sandbox config: invalid hostname %q", h)
	}
	return nil
}

// RunPodSandbox makes the pod's namespaces, starts its infra process and attaches it to the
// network. Anything half made is undone on failure.
func (s *Server) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if err := validateSandboxConfig(cfg); err != nil {
		return nil, err
	}
	id := newID()
	key := sandboxKey(cfg.GetMetadata())
	if err := s.reserveName(key, id); err != nil {
		return nil, err
	}
	sb := &sandbox{
		rec: sandboxRecord{ID: id, State: sbCreating, CreatedAt: time.Now().UnixNano(), RuntimeHandler: req.GetRuntimeHandler(), Config: marshalProto(cfg)},
		cfg: cfg,
		dir: filepath.Join(s.cfg.StateDir, sandboxesDir, id),
	}
	if err := s.runSandbox(ctx, sb); err != nil {
		s.releaseName(key, id)
		return nil, err
	}
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.mu.Unlock()
	s.log.Info("pod sandbox ready", "id", id, "pod", cfg.GetMetadata().GetNamespace()+"/"+cfg.GetMetadata().GetName(), "ips", sb.rec.Network.ipsOrNil())
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (n *networkRecord) ipsOrNil() []string {
	if n == nil {
		return nil
	}
	return n.IPs
}

func (s *Server) runSandbox(ctx context.Context, sb *sandbox) (err error) {
	opts := sb.nsOpts()
	hostNet := opts.GetNetwork() == runtimeapi.NamespaceMode_NODE
	if !hostNet {
		list, file, err := s.cni.network()
		if err != nil {
			return status.Errorf(codes.FailedPrecondition, "network is not ready: %v", err)
		}
		sb.rec.NetNS = filepath.Join(s.cfg.NetnsDir, "cni-"+sb.rec.ID[:32])
		sb.rec.Network = &networkRecord{Name: list.Name, ConfList: list.Bytes}
		s.log.Debug("using network", "name", list.Name, "file", file)
	}
	if err := os.MkdirAll(sb.dir, 0o700); err != nil {
		return err
	}
	if err := sb.save(); err != nil {
		os.RemoveAll(sb.dir)
		return fmt.Errorf("record sandbox: %w", err)
	}
	defer func() {
		if err != nil {
			if uerr := s.undoSandbox(sb); uerr != nil {
				s.log.Error("undo failed sandbox", "id", sb.rec.ID, "err", uerr)
				err = fmt.Errorf("%w (and undoing it failed: %v)", err, uerr)
			}
		}
	}()

	spec, flags, err := s.pauseSetup(sb)
	if err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(sb.dir, "pause.json"), spec); err != nil {
		return err
	}
	var h *helperProc
	start := func() (serr error) {
		h, serr = s.startPause(sb, flags)
		return serr
	}
	if hostNet {
		err = start()
	} else {
		err = newNetNS(sb.rec.NetNS, start)
	}
	if err != nil {
		return status.Errorf(codes.Internal, "start pod infra process: %v", err)
	}
	ref, err := h.wait()
	sb.rec.Pause = ref
	if err != nil {
		return status.Errorf(codes.Internal, "pod infra process: %v", err)
	}
	if !hostNet {
		list, err := listFromBytes(sb.rec.Network.ConfList)
		if err != nil {
			return err
		}
		sb.rec.Network.Attached = true // from now on, undoing needs a DEL
		if err := sb.save(); err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cniTimeout)
		defer cancel()
		res, err := s.cni.add(cctx, list, sb.podNet())
		if err != nil {
			return status.Errorf(codes.Unknown, "set up pod network: %v", err)
		}
		sb.rec.Network.IPs = podIPs(res)
		sb.rec.Network.Result = resultJSON(res)
	}
	sb.rec.State = sbReady
	return sb.save()
}

// pauseSetup decides which namespaces the infra process makes and what it mounts in them.
func (s *Server) pauseSetup(sb *sandbox) (pauseSpec, uintptr, error) {
	opts := sb.nsOpts()
	flags := uintptr(syscall.CLONE_NEWNS)
	var spec pauseSpec
	if opts.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		flags |= syscall.CLONE_NEWUTS // host-network pods share the node's UTS namespace, as with containerd
		if h := sb.cfg.GetHostname(); h != "" {
			spec.Hostname = h
			spec.HostsFile = filepath.Join(sb.dir, "hostname")
			if err := os.WriteFile(spec.HostsFile, []byte(h+"\n"), 0o644); err != nil {
				return spec, 0, err
			}
		}
	}
	if opts.GetIpc() != runtimeapi.NamespaceMode_NODE {
		flags |= syscall.CLONE_NEWIPC
	}
	if opts.GetPid() == runtimeapi.NamespaceMode_POD {
		flags |= syscall.CLONE_NEWPID
		spec.MountProc = true
	}
	if d := sb.cfg.GetDnsConfig(); d != nil {
		spec.ResolvConf = filepath.Join(sb.dir, "resolv.conf")
		if err := os.WriteFile(spec.ResolvConf, []byte(resolvConf(d)), 0o644); err != nil {
			return spec, 0, err
		}
	}
	return spec, flags, nil
}

func resolvConf(d *runtimeapi.DNSConfig) string {
	var b strings.Builder
	if len(d.GetSearches()) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(d.GetSearches(), " "))
	}
	for _, ns := range d.GetServers() {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if len(d.GetOptions()) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(d.GetOptions(), " "))
	}
	return b.String()
}

// startPause starts the infra process in new namespaces; the calling thread's network
// namespace is the pod's.
func (s *Server) startPause(sb *sandbox, flags uintptr) (*helperProc, error) {
	return s.startHelper(filepath.Join(sb.dir, "pause.log"), []string{PauseArg, s.cfg.StateDir, sb.rec.ID}, nil,
		&syscall.SysProcAttr{Setsid: true, Cloneflags: flags})
}

// helperProc is a started pause or monitor process whose one-line report is awaited.
type helperProc struct {
	cmd    *exec.Cmd
	report *os.File
}

// startHelper re-executes the shim as a helper. The helper reports on its extra file 3
// ("ok ..." or an error message) once it is set up; more files follow as 4, 5, ...
func (s *Server) startHelper(logPath string, args []string, extra []*os.File, attr *syscall.SysProcAttr) (*helperProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	cmd := exec.Command(s.cfg.Self, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = append([]*os.File{w}, extra...)
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, err
	}
	return &helperProc{cmd: cmd, report: r}, nil
}

// wait reads the helper's report; the helper is reaped in the background when it exits.
func (h *helperProc) wait() (procRef, error) {
	defer h.report.Close()
	ref, rerr := refOf(h.cmd.Process.Pid)
	go func() { _ = h.cmd.Wait() }()
	msg, err := readReport(h.report, 20*time.Second)
	if err != nil {
		return ref, err
	}
	if rerr != nil {
		return ref, fmt.Errorf("helper exited at once: %s", msg)
	}
	if msg != "ok" && !strings.HasPrefix(msg, "ok ") {
		return ref, errors.New(msg)
	}
	return ref, nil
}

// readReport reads a helper's one-line report ("ok", "ok <pid>" or an error message).
func readReport(r *os.File, timeout time.Duration) (string, error) {
	_ = r.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 4096)
	var got []byte
	for {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if i := bytes.IndexByte(got, '\n'); i >= 0 {
			return strings.TrimSpace(string(got[:i])), nil
		}
		if err != nil {
			if len(got) > 0 {
				return strings.TrimSpace(string(got)), nil
			}
			return "", fmt.Errorf("helper process gave no report: %w", err)
		}
	}
}

// undoSandbox removes whatever a failed or abandoned RunPodSandbox made.
func (s *Server) undoSandbox(sb *sandbox) error {
	var errs []error
	if err := sb.rec.Pause.kill(); err != nil {
		errs = append(errs, err)
	}
	if err := s.detach(sb); err != nil {
		errs = append(errs, err)
	}
	if sb.rec.NetNS != "" {
		if err := removeNetNS(sb.rec.NetNS); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if err := os.RemoveAll(sb.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// detach runs CNI DEL when the pod may be attached; it is repeatable.
func (s *Server) detach(sb *sandbox) error {
	n := sb.rec.Network
	if n == nil || !n.Attached {
		return nil
	}
	list, err := listFromBytes(n.ConfList)
	if err != nil {
		return fmt.Errorf("recorded network config: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cniTimeout)
	defer cancel()
	if err := s.cni.del(ctx, list, sb.podNet()); err != nil {
		return err
	}
	n.Attached = false
	return nil
}

// StopPodSandbox stops the pod's containers and its infra process and detaches it from the
// network. The namespaces stay until RemovePodSandbox. Unknown IDs are success.
func (s *Server) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	sb, err := s.lookupSandbox(req.GetPodSandboxId())
	if status.Code(err) == codes.NotFound {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := s.stopSandbox(sb); err != nil {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (s *Server) stopSandbox(sb *sandbox) error {
	for _, c := range s.containersOf(sb.rec.ID) {
		if err := c.stop(0); err != nil {
			return status.Errorf(codes.Internal, "stop container %s: %v", c.rec.ID, err)
		}
	}
	if err := sb.rec.Pause.kill(); err != nil {
		return status.Errorf(codes.Internal, "stop infra process: %v", err)
	}
	derr := s.detach(sb)
	if derr == nil {
		sb.rec.State = sbStopped
	}
	if err := sb.save(); err != nil {
		return status.Errorf(codes.Internal, "record sandbox: %v", err)
	}
	if derr != nil {
		return status.Errorf(codes.Unknown, "tear down pod network: %v", derr)
	}
	return nil
}

// RemovePodSandbox stops the pod if needed, removes its containers, runs CNI DEL once more,
// and removes its namespaces and state. Unknown IDs are success.
func (s *Server) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, err := s.lookupSandbox(req.GetPodSandboxId())
	if status.Code(err) == codes.NotFound {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if err := s.removeSandbox(sb); err != nil {
		return nil, err
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

func (s *Server) removeSandbox(sb *sandbox) error {
	if err := s.stopSandbox(sb); err != nil {
		return err
	}
	for _, c := range s.containersOf(sb.rec.ID) {
		if err := s.removeContainer(c); err != nil {
			return err
		}
	}
	if sb.rec.Network != nil {
		sb.rec.Network.Attached = true // DEL once more, as kubelet's runtimes do
		if err := s.detach(sb); err != nil {
			return status.Errorf(codes.Unknown, "tear down pod network: %v", err)
		}
	}
	if sb.rec.NetNS != "" {
		if err := removeNetNS(sb.rec.NetNS); err != nil {
			return status.Errorf(codes.Internal, "%v", err)
		}
	}
	if err := os.RemoveAll(sb.dir); err != nil {
		return status.Errorf(codes.Internal, "remove sandbox state: %v", err)
	}
	s.mu.Lock()
	delete(s.sandboxes, sb.rec.ID)
	s.mu.Unlock()
	s.releaseName(sandboxKey(sb.cfg.GetMetadata()), sb.rec.ID)
	s.log.Info("pod sandbox removed", "id", sb.rec.ID)
	return nil
}

func (s *Server) sandboxState(sb *sandbox) runtimeapi.PodSandboxState {
	if sb.ready() {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// PodSandboxStatus reports the pod's state and IPs.
func (s *Server) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	sb, err := s.lookupSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	st := &runtimeapi.PodSandboxStatus{
		Id:             sb.rec.ID,
		Metadata:       sb.cfg.GetMetadata(),
		State:          s.sandboxState(sb),
		CreatedAt:      sb.rec.CreatedAt,
		Labels:         sb.cfg.GetLabels(),
		Annotations:    sb.cfg.GetAnnotations(),
		RuntimeHandler: sb.rec.RuntimeHandler,
		Linux:          &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: sb.nsOpts()}},
		Network:        &runtimeapi.PodSandboxNetworkStatus{},
	}
	if ips := sb.rec.Network.ipsOrNil(); len(ips) > 0 && sb.rec.State != sbStopped {
		st.Network.Ip = ips[0]
		for _, ip := range ips[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: st}
	if req.GetVerbose() {
		resp.Info = map[string]string{
			"pid":   fmt.Sprint(sb.rec.Pause.PID),
			"netns": sb.rec.NetNS,
			"state": sb.rec.State,
		}
		if sb.rec.Network != nil {
			resp.Info["network"] = sb.rec.Network.Name
			resp.Info["cniResult"] = string(sb.rec.Network.Result)
		}
	}
	for _, c := range s.containersOf(sb.rec.ID) {
		resp.ContainersStatuses = append(resp.ContainersStatuses, c.status(false).GetStatus())
	}
	return resp, nil
}

func (s *Server) listSandboxes(f *runtimeapi.PodSandboxFilter) []*runtimeapi.PodSandbox {
	s.mu.Lock()
	all := make([]*sandbox, 0, len(s.sandboxes))
	for _, sb := range s.sandboxes {
		all = append(all, sb)
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].rec.CreatedAt < all[j].rec.CreatedAt })
	var out []*runtimeapi.PodSandbox
	for _, sb := range all {
		sb.mu.Lock()
		p := &runtimeapi.PodSandbox{
			Id: sb.rec.ID, Metadata: sb.cfg.GetMetadata(), State: s.sandboxState(sb), CreatedAt: sb.rec.CreatedAt,
			Labels: sb.cfg.GetLabels(), Annotations: sb.cfg.GetAnnotations(), RuntimeHandler: sb.rec.RuntimeHandler,
		}
		sb.mu.Unlock()
		if f != nil {
			if f.GetId() != "" && !strings.HasPrefix(p.Id, f.GetId()) {
				continue
			}
			if f.GetState() != nil && f.GetState().GetState() != p.State {
				continue
			}
			if !labelsMatch(p.Labels, f.GetLabelSelector()) {
				continue
			}
		}
		out = append(out, p)
	}
	return out
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// ListPodSandbox lists pods, filtered by ID (or prefix), state and labels.
func (s *Server) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	return &runtimeapi.ListPodSandboxResponse{Items: s.listSandboxes(req.GetFilter())}, nil
}

// StreamPodSandboxes is ListPodSandbox as a stream (the CRIListStreaming client feature).
func (s *Server) StreamPodSandboxes(req *runtimeapi.StreamPodSandboxesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamPodSandboxesResponse]) error {
	items := s.listSandboxes(req.GetFilter())
	for len(items) > 0 {
		n := min(len(items), 100)
		if err := stream.Send(&runtimeapi.StreamPodSandboxesResponse{PodSandboxes: items[:n]}); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}
