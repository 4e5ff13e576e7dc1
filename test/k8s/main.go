// Command e2e-k8s runs the suite under a real Kubernetes control plane and kubelet on this one
// machine (make e2e-k8s): etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a
// kubelet with containerd (and, when built, the project's CRI shim) as its runtime, all inside a
// throwaway node network namespace and a private mount namespace, with the state in one private
// directory. It checks pods' networking end to end, prints a summary table and the closing line
// `N passed, M failed`, and proves the machine's root network namespace, sysctls, cgroups,
// mounts and paths are as they were.
//
// A program rather than a go test: it owns its output (the summary's closing line), tears down
// on SIGINT/SIGTERM (go test kills the test binary without running cleanups) and under a
// watchdog, and becomes the child subreaper of the runtimes' shims.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type options struct {
	k8sBin   string
	repo     string
	refDir   string
	plugins  string
	imageTar string
	image    string
	runtimes string
	state    string
	timeout  time.Duration
	keep     bool
}

func main() {
	var o options
	flag.StringVar(&o.k8sBin, "k8s-bin", "", "directory with etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl, crictl (scripts/k8s-build.sh)")
	flag.StringVar(&o.repo, "repo", ".", "the repository (bin/ of make build, deploy/)")
	flag.StringVar(&o.refDir, "ref-dir", filepath.Join(os.Getenv("HOME"), ".cache/cni-suite/ref-v1.9.1"), "the reference plugins v1.9.1")
	flag.StringVar(&o.plugins, "plugins", "auto", "how the network reaches the node: deploy (containerd: make image + kubectl apply -f deploy/; crishim: make install + install-cni config), suite or ref (binaries copied in, conflist rendered), auto (deploy when deploy/ and the image exist, else suite when bin/ has the plugins, else ref)")
	flag.StringVar(&o.imageTar, "image-archive", "", "the image archive of make image (default <repo>/bin/cni-suite-image.tar)")
	flag.StringVar(&o.image, "image", "docker.io/cni-suite/cni-suite:dev", "the image name deploy/daemonset.yaml uses")
	flag.StringVar(&o.runtimes, "runtimes", "containerd", "comma-separated CRI runtimes to run the flow with: containerd, crishim")
	flag.StringVar(&o.state, "state", "", "private state directory (default: a new /tmp/cnis-k8s-*)")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "watchdog: the whole run is torn down after this")
	flag.BoolVar(&o.keep, "keep", false, "keep the state directory (logs) even when everything passed")
	flag.Parse()
	os.Exit(runMain(o))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e-k8s: "+format+"\n", args...)
}

func runMain(o options) int {
	if os.Geteuid() != 0 {
		logf("needs root (network and mount namespaces, cgroups)")
		return 2
	}
	if o.k8sBin == "" {
		logf("-k8s-bin is required (scripts/k8s-build.sh prints it)")
		return 2
	}
	start := time.Now()
	rep := &Report{out: os.Stdout}

	// Ctrl-C/SIGTERM and the watchdog both cancel ctx; every wait honours it and teardown runs.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("watchdog: the run exceeded -timeout %s", o.timeout))
	defer cancel()

	state := o.state
	if state == "" {
		var err error
		if state, err = os.MkdirTemp("/tmp", "cnis-k8s-"); err != nil {
			logf("%v", err)
			return 2
		}
	} else if err := os.MkdirAll(state, 0o700); err != nil {
		logf("%v", err)
		return 2
	}
	logf("state dir %s; watchdog %s", state, o.timeout)
	sup, err := NewSupervisor(state)
	if err != nil {
		logf("%v", err)
		return 2
	}

	before := TakeSnapshot()
	for _, rt := range strings.Split(o.runtimes, ",") {
		rt = strings.TrimSpace(rt)
		if rt == "" {
			continue
		}
		runFlow(ctx, o, rt, filepath.Join(state, rt), sup, rep)
	}
	tm := time.Now()
	after := TakeSnapshot()
	d := before.Diff(after)
	var snapErr error
	if len(d) > 0 {
		snapErr = fmt.Errorf("the machine changed:\n  %s", strings.Join(d, "\n  "))
	}
	rep.Add(Result{Runtime: "machine", Check: "root netns (links, addrs, routes, iptables, nft), sysctls, cgroups, mounts, paths unchanged",
		Err: snapErr, Dur: time.Since(tm)})
	if ctx.Err() != nil {
		rep.Add(Result{Runtime: "machine", Check: "run finished before the watchdog or an interrupt", Err: context.Cause(ctx)})
	}

	_, fail, _ := rep.Counts()
	if fail == 0 && !o.keep && o.state == "" {
		if err := os.RemoveAll(state); err != nil {
			logf("removing %s: %v", state, err)
		}
	} else {
		logf("state and logs kept in %s", state)
	}
	fmt.Printf("\ne2e-k8s summary (%.1fs)\n%s", time.Since(start).Seconds(), rep.Summary())
	if fail > 0 {
		return 1
	}
	return 0
}

// runFlow brings up one complete node (control plane included) with one runtime, runs every
// check, and tears it all down, whatever happened.
func runFlow(ctx context.Context, o options, rt, state string, sup *Supervisor, rep *Report) {
	f := &flow{runtime: rt, rep: rep}
	if err := os.MkdirAll(state, 0o700); err != nil {
		f.step("setup", true, func() error { return err })
		return
	}
	var (
		node    *Node
		c       *Cluster
		runtime Runtime
	)
	defer func() {
		// Teardown gets its own time budget (ctx may be cancelled); a hard stop bounds it.
		tctx, tcancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer tcancel()
		hard := time.AfterFunc(4*time.Minute, func() {
			logf("teardown hung for 4 minutes: exiting (children die with us: PR_SET_PDEATHSIG)")
			os.Exit(3)
		})
		defer hard.Stop()
		t := time.Now()
		err := teardown(tctx, node, c, runtime)
		rep.Add(Result{Runtime: rt, Check: "teardown: every daemon and pod stopped, cgroups and namespaces removed", Err: err, Dur: time.Since(t)})
	}()

	var netw Network
	f.step("node netns, private mounts, cgroup root", true, func() error {
		var err error
		node, err = NewNode(ctx, sup, rt, state, logf)
		if err != nil {
			return err
		}
		switch rt {
		case "containerd":
			runtime = &Containerd{}
		case "crishim":
			runtime = &CRIShim{Bin: filepath.Join(o.repo, "bin", "crishim")}
		default:
			return fmt.Errorf("unknown runtime %q", rt)
		}
		netw, err = chooseNetwork(o, runtime)
		return err
	})
	f.step("control plane: etcd, apiserver, controller-manager, scheduler", true, func() error {
		var err error
		c, err = StartControlPlane(ctx, node, o.k8sBin, logf)
		return err
	})
	var endpoint string
	f.step("runtime "+rt+" started", true, func() error {
		var err error
		c.CNICacheDir = runtime.CNICacheDir(c)
		endpoint, err = runtime.Start(ctx, c)
		return err
	})
	var node0 *nodeObj
	f.step("kubelet registers the Node, which gets a podCIDR", true, func() error {
		if err := c.StartKubelet(ctx, endpoint); err != nil {
			return err
		}
		return waitFor(ctx, 60*time.Second, 250*time.Millisecond, "Node with spec.podCIDR", func() (bool, error) {
			if err := c.alive("kubelet"); err != nil {
				return false, err
			}
			n, err := c.NodeObj(ctx)
			if err != nil {
				return false, err
			}
			node0 = n
			if n.Spec.PodCIDR == "" {
				return false, fmt.Errorf("node %s has no podCIDR yet", nodeName)
			}
			_, cluster, _ := net.ParseCIDR(clusterCIDR)
			ip, _, err := net.ParseCIDR(n.Spec.PodCIDR)
			if err != nil || !cluster.Contains(ip) {
				return false, fmt.Errorf("podCIDR %q not in %s", n.Spec.PodCIDR, clusterCIDR)
			}
			return true, nil
		})
	})
	f.step("Node NotReady while no CNI config exists", false, func() error {
		cond, err := c.WaitNodeReady(ctx, "False", 60*time.Second)
		if err != nil {
			return err
		}
		msg := strings.ToLower(cond.Reason + " " + cond.Message)
		if !strings.Contains(msg, "network") && !strings.Contains(msg, "cni") {
			return fmt.Errorf("NotReady for another reason: %s: %s", cond.Reason, cond.Message)
		}
		return nil
	})
	f.step("CNI network installed: Node turns Ready", true, func() error {
		logf("installing the network: %s", netw.Describe())
		if err := netw.Install(ctx, c, node0.Spec.PodCIDR); err != nil {
			return err
		}
		_, err := c.WaitNodeReady(ctx, "True", 60*time.Second)
		return err
	})
	podCIDR, webRoot := "", ""
	if node0 != nil {
		podCIDR = node0.Spec.PodCIDR
	}
	if c != nil && runtime != nil {
		webRoot = runtime.WebRoot(c)
	}
	runPodChecks(ctx, f, c, podCIDR, webRoot, busyboxImage)
	if d, ok := netw.(*DeployNetwork); ok {
		runDeployChecks(ctx, f, c, d)
	}
}

// Network is how the suite's plugins and config reach the node.
type Network interface {
	Describe() string
	Install(ctx context.Context, c *Cluster, podCIDR string) error
}

func (d *DirectNetwork) Describe() string { return d.Label + ", copied into the node's CNI dirs" }

func chooseNetwork(o options, rt Runtime) (Network, error) {
	suite := filepath.Join(o.repo, "bin")
	hasSuite := true
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(suite, p)); err != nil {
			hasSuite = false
		}
	}
	archive := o.imageTar
	if archive == "" {
		archive = filepath.Join(suite, "cni-suite-image.tar")
	}
	_, errDS := os.Stat(filepath.Join(o.repo, "deploy", "daemonset.yaml"))
	_, errTar := os.Stat(archive)
	_, errInst := os.Stat(filepath.Join(suite, "install-cni"))
	canDeploy := hasSuite && errDS == nil && errInst == nil
	mode := o.plugins
	if mode == "auto" {
		switch {
		case canDeploy && (errTar == nil || rt.Name() != "containerd"):
			mode = "deploy"
		case hasSuite:
			mode = "suite"
		default:
			mode = "ref"
		}
	}
	switch mode {
	case "deploy":
		if !canDeploy {
			return nil, fmt.Errorf("-plugins=deploy needs deploy/daemonset.yaml and bin/ with the plugins and install-cni (make build)")
		}
		if r, ok := rt.(*Containerd); ok {
			if errTar != nil {
				return nil, fmt.Errorf("-plugins=deploy needs the image archive %s (make image)", archive)
			}
			return &DeployNetwork{Repo: o.repo, Archive: archive, Image: o.image, rt: r}, nil
		}
		// The shim runs no images: the operator's path there is make install + the installer.
		return &ShimNetwork{Repo: o.repo}, nil
	case "suite":
		if !hasSuite {
			return nil, fmt.Errorf("-plugins=suite but %s lacks a plugin (make build)", suite)
		}
		return &DirectNetwork{Label: "the suite's bin/", BinDir: suite}, nil
	case "ref":
		return &DirectNetwork{Label: "reference plugins v1.9.1", BinDir: o.refDir}, nil
	}
	return nil, fmt.Errorf("unknown -plugins %q", o.plugins)
}

// teardown stops, in order, the kubelet, the runtime's pods (so CNI DEL runs) and the runtime,
// the control plane, then everything left of the node; each by its recorded PID.
func teardown(ctx context.Context, node *Node, c *Cluster, rt Runtime) error {
	if c != nil {
		c.Stop("kubelet", 15*time.Second)
		if rt != nil {
			rt.Teardown(ctx, c)
		}
		for _, name := range []string{"kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"} {
			c.Stop(name, 15*time.Second)
		}
	}
	if node == nil {
		return nil
	}
	return node.Teardown(ctx)
}
