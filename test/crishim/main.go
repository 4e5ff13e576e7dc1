// Command crishim is a small CRI runtime for end-to-end tests and demos of CNI plugins: it
// serves the CRI (k8s.io/cri-api v1) on a unix socket and runs pods the way containerd does,
// their network set up through libcni with whatever plugins are installed, their containers
// as plain processes in the pods' namespaces (no images). See pkg/crishim.
//
//	crishim --listen /run/crishim.sock --cni-conf-dir /etc/cni/net.d --cni-bin-dir /opt/cni/bin \
//	        --state-dir /var/lib/crishim --netns-dir /run/crishim/netns
//	crishim teardown --state-dir ... --netns-dir ... [--cni-...]   (remove every pod, leave nothing)
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/cni-suite/cni-suite/pkg/buildinfo"
	"github.com/cni-suite/cni-suite/pkg/crishim"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case crishim.PauseArg:
			os.Exit(crishim.PauseMain(os.Args[2:]))
		case crishim.MonitorArg:
			os.Exit(crishim.MonitorMain(os.Args[2:]))
		case "teardown":
			os.Exit(run(os.Args[2:], true))
		}
	}
	os.Exit(run(os.Args[1:], false))
}

type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, d := range filepath.SplitList(strings.ReplaceAll(v, ",", ":")) {
		if d != "" {
			*l = append(*l, d)
		}
	}
	return nil
}

func run(args []string, teardown bool) int {
	fs := flag.NewFlagSet("crishim", flag.ContinueOnError)
	var (
		cfg     crishim.Config
		binDirs listFlag
		debug   bool
		version bool
	)
	fs.StringVar(&cfg.Listen, "listen", "/run/crishim/crishim.sock", "unix socket to serve the CRI on")
	fs.StringVar(&cfg.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "directory of CNI network configs (the first by name is used)")
	fs.Var(&binDirs, "cni-bin-dir", "directories of CNI plugin binaries, ':' or ',' separated, repeatable (default /opt/cni/bin)")
	fs.StringVar(&cfg.StateDir, "state-dir", "/var/lib/crishim", "directory for the shim's records")
	fs.StringVar(&cfg.NetnsDir, "netns-dir", "/run/crishim/netns", "directory where pod network namespaces are pinned")
	fs.StringVar(&cfg.StreamAddr, "streaming-addr", "127.0.0.1:0", "host:port of the exec/attach/port-forward streaming server")
	fs.BoolVar(&debug, "debug", false, "log debug messages")
	fs.BoolVar(&version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if version {
		fmt.Println("crishim (cni-suite)", buildinfo.Version)
		return 0
	}
	if len(binDirs) == 0 {
		binDirs = listFlag{"/opt/cni/bin"}
	}
	cfg.CNIBinDirs = binDirs
	cfg.Version = buildinfo.Version
	for _, p := range []*string{&cfg.StateDir, &cfg.NetnsDir, &cfg.Listen} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			fmt.Fprintln(os.Stderr, "crishim:", err)
			return 2
		}
		*p = abs
	}
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := crishim.New(ctx, cfg)
	if err != nil {
		cfg.Logger.Error("start", "err", err)
		return 1
	}
	defer srv.Close()
	if teardown {
		if err := srv.Teardown(ctx); err != nil {
			cfg.Logger.Error("teardown", "err", err)
			return 1
		}
		cfg.Logger.Info("teardown done: no pods left")
		return 0
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Listen), 0o755); err != nil {
		cfg.Logger.Error("listen", "err", err)
		return 1
	}
	_ = os.Remove(cfg.Listen)
	ln, err := net.Listen("unix", cfg.Listen)
	if err != nil {
		cfg.Logger.Error("listen", "err", err)
		return 1
	}
	cfg.Logger.Info("serving CRI", "socket", cfg.Listen, "version", buildinfo.Version)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	if err := srv.Serve(ln); err != nil && ctx.Err() == nil {
		cfg.Logger.Error("serve", "err", err)
		return 1
	}
	cfg.Logger.Info("stopped; pods keep running and are picked up at the next start")
	return 0
}
