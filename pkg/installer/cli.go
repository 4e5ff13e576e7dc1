package installer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/cni-suite/cni-suite/pkg/buildinfo"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

const usage = `install-cni puts the cni-suite CNI plugins and their network config on a node.

Usage:
  install-cni bins      [--src DIR] [--dst DIR] [--plugins LIST] [--verify-exec=BOOL]
  install-cni config    [--conf-dir DIR] [--pod-cidr CIDR]... [--node-name NAME] [--api-server URL] ...
  install-cni render    --pod-cidr CIDR... [--mtu N] ...      (print the config, write nothing)
  install-cni uninstall [--dst DIR] [--conf-dir DIR] [--name NAME]
  install-cni ready     [--conf-dir DIR] [--name NAME]       (readiness probe: exit 0 once the config is there)
  install-cni wait                                           (block until SIGTERM)
  install-cni version

Run "install-cni <command> -h" for a command's flags.
`

// Env names read as flag defaults (set by the DaemonSet).
const (
	EnvNodeName  = "NODE_NAME"            // from the downward API, spec.nodeName
	EnvAPIServer = "CNI_SUITE_API_SERVER" // the API server address, when the Service IP is not routed
)

type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// Env is how the CLI reads the environment (os.Getenv in production).
type Env func(string) string

type cli struct {
	env    Env
	stdout io.Writer
	logger *log.Logger
}

func (c *cli) logf(format string, args ...any) { c.logger.Printf(format, args...) }

// command is one parsed subcommand, ready to run.
type command struct {
	name string
	run  func(ctx context.Context) error
}

// Main runs install-cni with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, env Env, stdout, stderr io.Writer) int {
	c := &cli{env: env, stdout: stdout, logger: log.New(stderr, "install-cni: ", log.LstdFlags|log.LUTC)}
	cmd, err := c.parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "install-cni: %v\n", err)
		return 2
	}
	if err := cmd.run(ctx); err != nil {
		c.logf("%s: %v", cmd.name, err)
		return 1
	}
	return 0
}

// CheckArgs parses args as Main would and runs nothing: the manifests' test uses it to prove that
// every command line they hold is one the installer accepts.
func CheckArgs(args []string) error {
	c := &cli{env: func(string) string { return "" }, stdout: io.Discard, logger: log.New(io.Discard, "", 0)}
	_, err := c.parse(args, io.Discard)
	return err
}

// RunMain is the binary's main: Main with the process's args, environment and signals.
func RunMain() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func (c *cli) parse(args []string, stderr io.Writer) (*command, error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return nil, errors.New("no command")
	}
	name, args := args[0], args[1:]
	fs := flag.NewFlagSet("install-cni "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var run func(ctx context.Context) error

	// Flags shared by several commands.
	dst := func() *string { return fs.String("dst", "/opt/cni/bin", "the runtime's CNI bin dir") }
	confDir := func() *string { return fs.String("conf-dir", "/etc/cni/net.d", "the runtime's CNI conf dir") }
	netName := func() *string {
		return fs.String("name", conflist.DefaultNetworkName, "network name (the conflist is 10-<name>.conflist)")
	}

	switch name {
	case "bins":
		src := fs.String("src", "", "directory holding the binaries (default: the directory of install-cni itself)")
		dst := dst()
		plugins := fs.String("plugins", strings.Join(DefaultPlugins, ","), "comma-separated binaries to install")
		verify := fs.Bool("verify-exec", true, "run each new binary with CNI_COMMAND=VERSION before it goes live")
		run = func(context.Context) error {
			s := *src
			if s == "" {
				self, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find own directory: %w (give --src)", err)
				}
				if self, err = filepath.EvalSymlinks(self); err != nil {
					return fmt.Errorf("find own directory: %w (give --src)", err)
				}
				s = filepath.Dir(self)
			}
			res, err := InstallBins(BinOptions{Src: s, Dst: *dst, Plugins: splitList(*plugins), VerifyExec: *verify, Logf: c.logf})
			if err != nil {
				return err
			}
			c.logf("%d binaries in place in %s", len(res), *dst)
			return nil
		}
	case "config", "render":
		confDir := confDir()
		netName := netName()
		bridge := fs.String("bridge", conflist.DefaultBridge, "bridge device")
		var cidrs stringList
		fs.Var(&cidrs, "pod-cidr", "this node's pod CIDR (repeat, or comma-separate, for dual-stack); default: the Node's spec.podCIDRs")
		mtu := fs.Int("mtu", 0, "pod MTU (default: the MTU of the node's default-route link)")
		dataDir := fs.String("data-dir", conflist.DefaultDataDir, "host-local's dataDir on the node")
		binDir := fs.String("bin-dir", "", "the CNI bin dir; when set, the config is written only while its plugins are there")
		hostRoot := fs.String("host-root", "", "where the node's root is mounted in this container; when set, the data dir is created under it")
		nodeName := fs.String("node-name", c.env(EnvNodeName), "this node's name (env "+EnvNodeName+")")
		apiServer := fs.String("api-server", c.env(EnvAPIServer), "API server address, overriding the kubernetes Service's (env "+EnvAPIServer+")")
		kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default: the pod's service account)")
		tokenFile := fs.String("token-file", DefaultTokenFile, "service account token")
		caFile := fs.String("ca-file", DefaultCAFile, "service account CA bundle")
		resync := fs.Duration("resync", 5*time.Minute, "how often to check the config again without a change")
		once := fs.Bool("once", false, "exit once the config is written instead of watching")
		run = func(ctx context.Context) error {
			np := conflist.NetParams{Name: *netName, Bridge: *bridge, MTU: *mtu, DataDir: *dataDir}
			if name == "render" {
				p, err := conflist.ParsePodCIDRs(cidrs)
				if err != nil {
					return err
				}
				if len(p) == 0 {
					return errors.New("render needs --pod-cidr")
				}
				np.PodCIDRs = p
				b, err := conflist.Render(np)
				if err != nil {
					return err
				}
				_, err = c.stdout.Write(b)
				return err
			}
			o := ConfigOptions{
				ConfDir: *confDir, Net: np, PodCIDRs: cidrs, NodeName: *nodeName, BinDir: *binDir,
				DetectMTU: func() (int, string, error) { return DefaultRouteMTU(nil) },
				Resync:    *resync, Once: *once, Logf: c.logf,
			}
			if *hostRoot != "" {
				o.DataDirOnHost = filepath.Join(*hostRoot, *dataDir)
			}
			if len(cidrs) == 0 {
				cfg, err := RESTConfig(KubeOptions{APIServer: *apiServer, Kubeconfig: *kubeconfig, TokenFile: *tokenFile,
					CAFile: *caFile, UserAgent: "install-cni/" + buildinfo.Version}, c.env)
				if err != nil {
					return err
				}
				c.logf("API server %s", cfg.Host)
				if o.Client, err = kubernetes.NewForConfig(cfg); err != nil {
					return err
				}
			}
			return RunConfig(ctx, o)
		}
	case "uninstall":
		dst, confDir, netName := dst(), confDir(), netName()
		run = func(context.Context) error {
			if err := Uninstall(UninstallOptions{Dst: *dst, ConfDir: *confDir, ConfName: conflist.ConfFileName(*netName), Logf: c.logf}); err != nil {
				return err
			}
			c.logf("uninstalled")
			return nil
		}
	case "ready":
		confDir, netName := confDir(), netName()
		run = func(context.Context) error {
			if err := CheckConflist(*confDir, conflist.ConfFileName(*netName), *netName); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "ready: %s\n", filepath.Join(*confDir, conflist.ConfFileName(*netName)))
			return nil
		}
	case "wait":
		run = func(ctx context.Context) error {
			<-ctx.Done()
			return nil
		}
	case "version":
		run = func(context.Context) error {
			fmt.Fprintf(c.stdout, "install-cni (cni-suite) %s\n", buildinfo.Version)
			return nil
		}
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, usage)
		return nil, flag.ErrHelp
	default:
		fmt.Fprint(stderr, usage)
		return nil, fmt.Errorf("unknown command %q", name)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f := fs.Lookup("name"); f != nil {
		if err := conflist.ValidNetworkName(f.Value.String()); err != nil {
			return nil, err
		}
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%s: unexpected arguments %q", name, fs.Args())
	}
	return &command{name: name, run: run}, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
