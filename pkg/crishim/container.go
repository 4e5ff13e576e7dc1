package crishim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
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

type container struct {
	mu  sync.Mutex // serialises Start/Stop/Remove of this container
	rec containerRecord
	cfg *runtimeapi.ContainerConfig
	dir string
}

func (c *container) save() error { return writeJSON(filepath.Join(c.dir, "container.json"), &c.rec) }

// observed is what the monitor's files say about the process.
type observed struct {
	state   runtimeapi.ContainerState
	started *startedRecord
	exit    *exitRecord
}

func (c *container) observe() observed {
	var o observed
	var ex exitRecord
	if err := readJSON(filepath.Join(c.dir, "exit.json"), &ex); err == nil {
		o.exit = &ex
	}
	var st startedRecord
	if err := readJSON(filepath.Join(c.dir, "started.json"), &st); err == nil {
		o.started = &st
	}
	switch {
	case o.exit != nil:
		o.state = runtimeapi.ContainerState_CONTAINER_EXITED
	case c.rec.StartFailed != "":
		o.state = runtimeapi.ContainerState_CONTAINER_EXITED
		o.exit = &exitRecord{ExitCode: 128, FinishedAt: c.rec.FinishedAt, Reason: "StartError", Message: c.rec.StartFailed}
	case o.started != nil:
		if o.started.Proc.alive() || c.rec.Monitor.alive() {
			o.state = runtimeapi.ContainerState_CONTAINER_RUNNING
			break
		}
		// The monitor died without recording the end (killed): the status is lost.
		o.state = runtimeapi.ContainerState_CONTAINER_EXITED
		o.exit = &exitRecord{ExitCode: 255, Reason: "Unknown", Message: "the container's monitor ended without recording its exit status"}
	default:
		o.state = runtimeapi.ContainerState_CONTAINER_CREATED
	}
	return o
}

func containerKey(cfg *runtimeapi.ContainerConfig, sb *runtimeapi.PodSandboxConfig) string {
	md := cfg.GetMetadata()
	return fmt.Sprintf("%s_%s_%d", md.GetName(), sandboxKey(sb.GetMetadata()), md.GetAttempt())
}

func (s *Server) lookupContainer(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return lookupByID(s.containers, id, "container")
}

func (s *Server) containersOf(sandboxID string) []*container {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*container
	for _, c := range s.containers {
		if c.rec.SandboxID == sandboxID {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rec.CreatedAt < out[j].rec.CreatedAt })
	return out
}

// CreateContainer records a container of a ready pod. Without images, the command (and args)
// must be given: it is run as a host process inside the pod's namespaces.
func (s *Server) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := req.GetConfig()
	if cfg == nil || cfg.GetMetadata() == nil || cfg.GetMetadata().GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "container config: metadata.name is missing")
	}
	if len(cfg.GetCommand())+len(cfg.GetArgs()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "container config: command is empty (crishim has no images to supply an entrypoint)")
	}
	sb, err := s.lookupSandbox(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if !sb.ready() {
		return nil, status.Errorf(codes.FailedPrecondition, "pod sandbox %s is not ready", sb.rec.ID)
	}
	id := newID()
	key := containerKey(cfg, sb.cfg)
	if err := s.reserveName(key, id); err != nil {
		return nil, err
	}
	imageRef := s.images.ensure(cfg.GetImage().GetImage())
	c := &container{
		rec: containerRecord{ID: id, SandboxID: sb.rec.ID, CreatedAt: time.Now().UnixNano(), Config: marshalProto(cfg), ImageRef: imageRef},
		cfg: cfg,
		dir: filepath.Join(s.cfg.StateDir, containersDir, id),
	}
	if d, p := sb.cfg.GetLogDirectory(), cfg.GetLogPath(); d != "" && p != "" {
		c.rec.LogPath = filepath.Join(d, p)
	}
	if err := os.MkdirAll(c.dir, 0o700); err == nil {
		err = c.save()
	}
	if err != nil {
		os.RemoveAll(c.dir)
		s.releaseName(key, id)
		return nil, status.Errorf(codes.Internal, "record container: %v", err)
	}
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (s *Server) attachSocket(id string) string {
	h := sha256.Sum256([]byte(s.cfg.StateDir))
	return "crishim-" + hex.EncodeToString(h[:6]) + "-" + id[:32]
}

// StartContainer starts the container's monitor, which starts the process in the pod's
// namespaces. A failed start leaves the container EXITED with reason StartError.
func (s *Server) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, err := s.lookupContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	sb, err := s.lookupSandbox(c.rec.SandboxID)
	if err != nil {
		return nil, err
	}
	sb.mu.Lock()
	defer sb.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.observe().state; st != runtimeapi.ContainerState_CONTAINER_CREATED {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is %s, not CREATED", c.rec.ID, st)
	}
	if !sb.ready() {
		return nil, status.Errorf(codes.FailedPrecondition, "pod sandbox %s is not ready", sb.rec.ID)
	}
	if err := s.startContainer(sb, c); err != nil {
		c.rec.StartFailed = err.Error()
		c.rec.FinishedAt = time.Now().UnixNano()
		_ = c.save()
		return nil, status.Errorf(codes.Unknown, "start container %s: %v", c.rec.ID, err)
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

func (s *Server) startContainer(sb *sandbox, c *container) error {
	spec := containerSpec{
		Args:         append(append([]string{}, c.cfg.GetCommand()...), c.cfg.GetArgs()...),
		Cwd:          c.cfg.GetWorkingDir(),
		LogPath:      c.rec.LogPath,
		Stdin:        c.cfg.GetStdin(),
		StdinOnce:    c.cfg.GetStdinOnce(),
		AttachSocket: s.attachSocket(c.rec.ID),
	}
	spec.Env = containerEnv(c.cfg, sb.cfg)
	if spec.Cwd == "" {
		spec.Cwd = "/"
	}
	kinds := []string{"ipc", "uts", "net", "mnt"}
	pidFrom := sb.rec.Pause.PID
	switch c.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetPid() {
	case runtimeapi.NamespaceMode_POD:
		kinds = append(kinds, "pid")
	case runtimeapi.NamespaceMode_CONTAINER:
		spec.NewPIDNS = sb.nsOpts().GetPid() != runtimeapi.NamespaceMode_NODE
	case runtimeapi.NamespaceMode_TARGET:
		t, err := s.lookupContainer(c.cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetTargetId())
		if err != nil {
			return fmt.Errorf("target container: %w", err)
		}
		o := t.observe()
		if o.state != runtimeapi.ContainerState_CONTAINER_RUNNING {
			return fmt.Errorf("target container %s is not running", t.rec.ID)
		}
		kinds = append(kinds, "pid")
		pidFrom = o.started.Proc.PID // opened below; the other kinds come from the pod
	}
	// Pod namespaces are held by the infra process; open them now so that the monitor joins
	// exactly these (a pid cannot be reused while its files are open).
	nss, err := openNamespaces(sb.rec.Pause.PID, without(kinds, "pid"), "")
	if err != nil {
		return err
	}
	if containsStr(kinds, "pid") {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/pid", pidFrom))
		if err != nil {
			closeNamespaces(nss)
			return fmt.Errorf("open pid namespace: %w", err)
		}
		nss = append([]nsFile{{kind: "pid", f: f}}, nss...)
	}
	defer closeNamespaces(nss)
	if !sb.ready() {
		return errors.New("pod infra process is gone")
	}
	var extra []*os.File
	for _, n := range nss {
		spec.Namespaces = append(spec.Namespaces, n.kind)
		extra = append(extra, n.f)
	}
	if err := writeJSON(filepath.Join(c.dir, "spec.json"), spec); err != nil {
		return err
	}
	h, err := s.startHelper(filepath.Join(c.dir, "monitor.log"), []string{MonitorArg, s.cfg.StateDir, c.rec.ID}, extra,
		&syscall.SysProcAttr{Setsid: true})
	if err != nil {
		return err
	}
	ref, err := h.wait()
	c.rec.Monitor = ref
	if serr := c.save(); serr != nil && err == nil {
		err = serr
	}
	return err
}

func without(list []string, x string) []string {
	var out []string
	for _, s := range list {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}

// containerEnv is the container's environment: a default PATH and HOSTNAME, then the
// configured variables (which win).
func containerEnv(cfg *runtimeapi.ContainerConfig, sb *runtimeapi.PodSandboxConfig) []string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if h := sb.GetHostname(); h != "" {
		env = append(env, "HOSTNAME="+h)
	}
	idx := map[string]int{"PATH": 0}
	if len(env) > 1 {
		idx["HOSTNAME"] = 1
	}
	for _, kv := range cfg.GetEnvs() {
		e := kv.GetKey() + "=" + string(kv.GetValue())
		if i, ok := idx[kv.GetKey()]; ok {
			env[i] = e
			continue
		}
		idx[kv.GetKey()] = len(env)
		env = append(env, e)
	}
	return env
}

// stop sends SIGTERM, waits up to timeout seconds, then SIGKILL, and waits for the monitor to
// record the exit. A container that is not running is left alone.
func (c *container) stop(timeout int64) error {
	o := c.observe()
	if o.state != runtimeapi.ContainerState_CONTAINER_RUNNING || o.started == nil {
		return nil
	}
	proc := o.started.Proc
	if timeout > 0 {
		if err := proc.signal(syscall.SIGTERM); err != nil {
			return err
		}
		if proc.waitGone(time.Duration(timeout) * time.Second) {
			return c.waitRecorded()
		}
	}
	if err := proc.kill(); err != nil {
		return err
	}
	return c.waitRecorded()
}

// waitRecorded waits (bounded) for the monitor to write the exit record.
func (c *container) waitRecorded() error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(c.dir, "exit.json")); err == nil {
			return nil
		}
		if !c.rec.Monitor.alive() {
			return nil // the monitor is gone: observe() reports the exit as unknown
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("container %s: exit not recorded by its monitor", c.rec.ID)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// StopContainer stops a running container (SIGTERM, then SIGKILL after the timeout).
// Unknown IDs are success.
func (s *Server) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, err := s.lookupContainer(req.GetContainerId())
	if status.Code(err) == codes.NotFound {
		return &runtimeapi.StopContainerResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stop(req.GetTimeout()); err != nil {
		return nil, status.Errorf(codes.Internal, "stop container: %v", err)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// RemoveContainer kills the container if it still runs and removes its state (not its log,
// which belongs to kubelet). Unknown IDs are success.
func (s *Server) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, err := s.lookupContainer(req.GetContainerId())
	if status.Code(err) == codes.NotFound {
		return &runtimeapi.RemoveContainerResponse{}, nil
	} else if err != nil {
		return nil, err
	}
	if err := s.removeContainer(c); err != nil {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *Server) removeContainer(c *container) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.stop(0); err != nil {
		return status.Errorf(codes.Internal, "stop container: %v", err)
	}
	if !c.rec.Monitor.waitGone(10 * time.Second) {
		_ = c.rec.Monitor.kill()
	}
	if err := os.RemoveAll(c.dir); err != nil {
		return status.Errorf(codes.Internal, "remove container state: %v", err)
	}
	s.mu.Lock()
	delete(s.containers, c.rec.ID)
	sb := s.sandboxes[c.rec.SandboxID]
	s.mu.Unlock()
	if sb != nil {
		s.releaseName(containerKey(c.cfg, sb.cfg), c.rec.ID)
	}
	return nil
}

func (c *container) summary(o observed) *runtimeapi.Container {
	return &runtimeapi.Container{
		Id: c.rec.ID, PodSandboxId: c.rec.SandboxID, Metadata: c.cfg.GetMetadata(),
		Image: c.cfg.GetImage(), ImageRef: c.rec.ImageRef, ImageId: c.rec.ImageRef, State: o.state, CreatedAt: c.rec.CreatedAt,
		Labels: c.cfg.GetLabels(), Annotations: c.cfg.GetAnnotations(),
	}
}

func (c *container) status(verbose bool) *runtimeapi.ContainerStatusResponse {
	o := c.observe()
	st := &runtimeapi.ContainerStatus{
		Id: c.rec.ID, Metadata: c.cfg.GetMetadata(), State: o.state, CreatedAt: c.rec.CreatedAt,
		Image: c.cfg.GetImage(), ImageRef: c.rec.ImageRef, ImageId: c.rec.ImageRef,
		Labels: c.cfg.GetLabels(), Annotations: c.cfg.GetAnnotations(), Mounts: c.cfg.GetMounts(), LogPath: c.rec.LogPath,
	}
	if o.started != nil {
		st.StartedAt = o.started.StartedAt
	}
	if o.exit != nil {
		st.ExitCode, st.FinishedAt, st.Reason, st.Message = o.exit.ExitCode, o.exit.FinishedAt, o.exit.Reason, o.exit.Message
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if verbose {
		resp.Info = map[string]string{"monitorPid": fmt.Sprint(c.rec.Monitor.PID), "stateDir": c.dir}
		if o.started != nil {
			resp.Info["pid"] = fmt.Sprint(o.started.Proc.PID)
		}
	}
	return resp
}

// ContainerStatus reports a container's state, times and exit code.
func (s *Server) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, err := s.lookupContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return c.status(req.GetVerbose()), nil
}

func (s *Server) listContainers(f *runtimeapi.ContainerFilter) []*runtimeapi.Container {
	s.mu.Lock()
	all := make([]*container, 0, len(s.containers))
	for _, c := range s.containers {
		all = append(all, c)
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return all[i].rec.CreatedAt < all[j].rec.CreatedAt })
	var out []*runtimeapi.Container
	for _, c := range all {
		if f != nil {
			if f.GetId() != "" && !strings.HasPrefix(c.rec.ID, f.GetId()) {
				continue
			}
			if f.GetPodSandboxId() != "" && !strings.HasPrefix(c.rec.SandboxID, f.GetPodSandboxId()) {
				continue
			}
			if !labelsMatch(c.cfg.GetLabels(), f.GetLabelSelector()) {
				continue
			}
		}
		sum := c.summary(c.observe())
		if f != nil && f.GetState() != nil && f.GetState().GetState() != sum.State {
			continue
		}
		out = append(out, sum)
	}
	return out
}

// ListContainers lists containers, filtered by ID (or prefix), pod, state and labels.
func (s *Server) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	return &runtimeapi.ListContainersResponse{Containers: s.listContainers(req.GetFilter())}, nil
}

// StreamContainers is ListContainers as a stream.
func (s *Server) StreamContainers(req *runtimeapi.StreamContainersRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamContainersResponse]) error {
	items := s.listContainers(req.GetFilter())
	for len(items) > 0 {
		n := min(len(items), 100)
		if err := stream.Send(&runtimeapi.StreamContainersResponse{Containers: items[:n]}); err != nil {
			return err
		}
		items = items[n:]
	}
	return nil
}

// ReopenContainerLog makes the monitor reopen the log file (after kubelet rotated it).
func (s *Server) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, err := s.lookupContainer(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if c.observe().state != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s is not running", c.rec.ID)
	}
	if err := c.rec.Monitor.signal(syscall.SIGUSR1); err != nil {
		return nil, status.Errorf(codes.Internal, "signal monitor: %v", err)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
