// Package crishim is a small CRI (k8s.io/cri-api v1) runtime for tests and demos: it runs pods
// the way containerd does (a sandbox is a set of namespaces held by an infra process, its
// network set up through libcni with whatever plugins are installed) but its containers are
// plain host processes run inside the pod's namespaces, without images.
package crishim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
)

// Config is the shim's configuration (its command-line flags).
type Config struct {
	Listen     string   // unix socket path for the CRI gRPC server
	CNIConfDir string   // where the network config is looked for
	CNIBinDirs []string // where plugin binaries are looked for, in order
	StateDir   string   // records, logs of helper processes, libcni's cache
	NetnsDir   string   // where pod network namespaces are pinned
	StreamAddr string   // host:port of the streaming (exec/attach/port-forward) server
	Self       string   // the shim's own binary, re-executed for the pause and monitor helpers
	Version    string
	Logger     *slog.Logger
}

// Server implements the CRI RuntimeService; Images() gives the ImageService.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer

	cfg    Config
	log    *slog.Logger
	cni    *cniNet
	images *imageService
	stream streaming.Server
	sln    net.Listener

	mu         sync.Mutex
	sandboxes  map[string]*sandbox
	containers map[string]*container
	names      map[string]string // reserved sandbox and container names -> id
}

// New loads the state, reconciles it with what still runs (undoing half-made sandboxes,
// killing orphans, CNI GC), and starts the streaming server.
func New(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.StateDir == "" || cfg.NetnsDir == "" || cfg.Listen == "" {
		return nil, errors.New("listen, state dir and netns dir are required")
	}
	if cfg.Self == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cfg.Self = self
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if cfg.StreamAddr == "" {
		cfg.StreamAddr = "127.0.0.1:0"
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, sandboxesDir), filepath.Join(cfg.StateDir, containersDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := ensureSharedDir(cfg.NetnsDir); err != nil {
		return nil, fmt.Errorf("netns dir: %w", err)
	}
	c, err := newCNINet(cfg.CNIConfDir, cfg.CNIBinDirs, filepath.Join(cfg.StateDir, "cni-cache"))
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, log: cfg.Logger, cni: c,
		sandboxes:  map[string]*sandbox{},
		containers: map[string]*container{},
		names:      map[string]string{},
	}
	if s.images, err = newImageService(filepath.Join(cfg.StateDir, "images.json"), cfg.StateDir); err != nil {
		return nil, err
	}
	if err := s.restore(ctx); err != nil {
		return nil, err
	}
	if err := s.startStreaming(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) startStreaming() error {
	ln, err := net.Listen("tcp", s.cfg.StreamAddr)
	if err != nil {
		return fmt.Errorf("streaming server: %w", err)
	}
	sc := streaming.DefaultConfig
	sc.Addr = ln.Addr().String()
	srv, err := streaming.NewServer(sc, &streamRuntime{s: s})
	if err != nil {
		ln.Close()
		return err
	}
	s.stream, s.sln = srv, ln
	go func() {
		if err := http.Serve(ln, srv); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("streaming server stopped", "err", err)
		}
	}()
	s.log.Info("streaming server listening", "addr", sc.Addr)
	return nil
}

// Images returns the ImageService half of the CRI.
func (s *Server) Images() runtimeapi.ImageServiceServer { return s.images }

// Serve registers both CRI services on a new gRPC server and serves the unix socket until
// the listener is closed.
func (s *Server) Serve(ln net.Listener) error {
	g := grpc.NewServer(
		grpc.ChainUnaryInterceptor(recoverUnary(s.log), explainUnimplemented),
		grpc.ChainStreamInterceptor(recoverStream(s.log)),
	)
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s.images)
	return g.Serve(ln)
}

// Close stops the streaming server. Pods keep running: a restarted shim picks them up.
func (s *Server) Close() error {
	if s.sln != nil {
		return s.sln.Close()
	}
	return nil
}

// recoverUnary turns a panic in a handler into an Internal error instead of a crash.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in CRI handler", "method", info.FullMethod, "panic", r, "stack", string(debug.Stack()))
				resp, err = nil, status.Errorf(codes.Internal, "crishim: internal error in %s: %v", info.FullMethod, r)
			}
		}()
		return h(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				log.Error("panic in CRI stream handler", "method", info.FullMethod, "panic", r)
				err = status.Errorf(codes.Internal, "crishim: internal error in %s: %v", info.FullMethod, r)
			}
		}()
		return h(srv, ss)
	}
}

// explainUnimplemented rewrites the generated "method X not implemented" into a message that
// says which runtime refused and why.
func explainUnimplemented(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented && strings.HasPrefix(st.Message(), "method ") {
		m := info.FullMethod[strings.LastIndex(info.FullMethod, "/")+1:]
		return nil, status.Errorf(codes.Unimplemented,
			"crishim does not implement %s: it is a test runtime whose containers are plain processes (no images, cgroups, stats or checkpoints)", m)
	}
	return resp, err
}

// Version answers the CRI version query.
func (s *Server) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       "crishim",
		RuntimeVersion:    s.cfg.Version,
		RuntimeApiVersion: "v1",
	}, nil
}

// Status reports RuntimeReady always and NetworkReady from the CNI config and its STATUS.
func (s *Server) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	netCond := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if err := s.cni.status(ctx); err != nil {
		netCond.Status = false
		netCond.Reason = "NetworkPluginNotReady"
		netCond.Message = "Network plugin returns error: " + err.Error()
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			netCond,
		}},
		RuntimeHandlers: []*runtimeapi.RuntimeHandler{{Name: "", Features: &runtimeapi.RuntimeHandlerFeatures{}}},
	}
	if req.GetVerbose() {
		_, file, _ := s.cni.network()
		resp.Info = map[string]string{"cniConfig": file, "cniBinDirs": strings.Join(s.cfg.CNIBinDirs, ":"), "netnsDir": s.cfg.NetnsDir}
	}
	return resp, nil
}

// UpdateRuntimeConfig accepts the pod CIDR kubelet sends; the CNI config decides addressing.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, req *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

// RuntimeConfig tells kubelet the cgroup driver (the shim makes no cgroups itself).
func (s *Server) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS}}, nil
}
