package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// containerdConfig renders containerd 1.6's config with every path in the state dir. CNI dirs
// stay the standard ones: the node sees them through its /etc and /opt overlays, which is where
// a DaemonSet's hostPath volumes write.
func containerdConfig(state string) string {
	d := filepath.Join(state, "containerd")
	return fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "%[1]s/containerd.sock"

[ttrpc]
  address = "%[1]s/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "%[1]s/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%[2]s"
  restrict_oom_score_adj = true
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"
  max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "%[1]s/runc"
`, d, pauseImage)
}

// kubeletConfig renders the KubeletConfiguration: cgroupfs under the node's own cgroupRoot,
// cgroup v1 allowed, kernel defaults protected (the node sees the wanted values through its
// bind mounts, so kubelet never writes a sysctl), no OOM score change (root lacks
// CAP_SYS_RESOURCE here), state and volume plugins in the state dir, fast status updates.
func kubeletConfig(state, cgroupRoot, endpoint, caFile string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: %[3]s
cgroupDriver: cgroupfs
cgroupRoot: %[2]s
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
protectKernelDefaults: true
oomScoreAdj: 0
address: %[5]s
healthzBindAddress: 127.0.0.1
healthzPort: 10248
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %[4]s
authorization:
  mode: AlwaysAllow
volumePluginDir: %[1]s/kubelet/volume-plugins
podLogsDir: /var/log/pods
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
nodeStatusUpdateFrequency: 2s
nodeStatusReportFrequency: 10s
syncFrequency: 10s
fileCheckFrequency: 5s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
  nodefs.inodesFree: "1%%"
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
maxPods: 110
runtimeRequestTimeout: 2m
shutdownGracePeriod: 0s
localStorageCapacityIsolation: true
`, state, cgroupRoot, endpoint, caFile, nodeIP)
}

// Runtime is one CRI runtime under the kubelet.
type Runtime interface {
	Name() string
	// Start starts the runtime in the node and returns its CRI endpoint.
	Start(ctx context.Context, c *Cluster) (string, error)
	// Teardown stops and removes every pod sandbox (so CNI DEL runs) and then the runtime.
	Teardown(ctx context.Context, c *Cluster)
	// CNICacheDir is where the runtime's libcni caches results (<dir>/results), as the node sees it.
	CNICacheDir(c *Cluster) string
	// WebRoot is a directory the web pod may write its page to.
	WebRoot(c *Cluster) string
}

// Containerd is Debian's containerd 1.6 with runc.
type Containerd struct{ sock string }

func (r *Containerd) Name() string { return "containerd" }

// CNICacheDir: containerd 1.6's libcni uses its default, /var/lib/cni (an overlay in the node).
func (r *Containerd) CNICacheDir(c *Cluster) string { return "/var/lib/cni" }

// WebRoot: a directory inside the web container.
func (r *Containerd) WebRoot(c *Cluster) string { return "/tmp/www" }

func (r *Containerd) Start(ctx context.Context, c *Cluster) (string, error) {
	cfg := filepath.Join(c.State, "containerd", "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(c.State)), 0o644); err != nil {
		return "", err
	}
	r.sock = filepath.Join(c.State, "containerd", "containerd.sock")
	if err := c.start("containerd", "containerd", "--config", cfg, "--log-level", "warn"); err != nil {
		return "", err
	}
	if err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "containerd socket", func() (bool, error) {
		if err := c.alive("containerd"); err != nil {
			return false, err
		}
		_, err := c.Exec(ctx, 10*time.Second, "ctr", "--address", r.sock, "version")
		return err == nil, err
	}); err != nil {
		return "", err
	}
	archive := filepath.Join(c.State, "images.tar")
	if err := WriteImageArchive(archive, "/bin/busybox", testImages()); err != nil {
		return "", err
	}
	if out, err := c.Exec(ctx, 60*time.Second, "ctr", "--address", r.sock, "-n", "k8s.io", "images", "import", archive); err != nil {
		return "", fmt.Errorf("import test images: %w", err)
	} else {
		c.logf("imported test images: %s", strings.TrimSpace(out))
	}
	return "unix://" + r.sock, nil
}

// ImportImage loads an image archive (docker or OCI) into the CRI namespace.
func (r *Containerd) ImportImage(ctx context.Context, c *Cluster, archive string) error {
	_, err := c.Exec(ctx, 120*time.Second, "ctr", "--address", r.sock, "-n", "k8s.io", "images", "import", archive)
	return err
}

func (r *Containerd) Teardown(ctx context.Context, c *Cluster) {
	if r.sock == "" || c.procs["containerd"] == nil {
		return
	}
	if out, err := c.Crictl(ctx, "unix://"+r.sock, "rmp", "--all", "--force"); err != nil {
		c.logf("teardown: crictl rmp: %v", err)
	} else if s := strings.TrimSpace(out); s != "" {
		c.logf("teardown: removed pod sandboxes: %s", strings.ReplaceAll(s, "\n", ", "))
	}
	c.Stop("containerd", 10*time.Second)
}

func testImages() []ImageSpec {
	return []ImageSpec{
		{Name: busyboxImage, Entrypoint: []string{"/bin/sh"}},
		// A sandbox holder that exits on TERM (the runtime sends KILL anyway when stopping).
		{Name: pauseImage, Entrypoint: []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"}},
	}
}

// StartKubelet starts the kubelet against the runtime's endpoint.
func (c *Cluster) StartKubelet(ctx context.Context, endpoint string) error {
	cfg := filepath.Join(c.State, "kubelet", "config.yaml")
	if err := os.WriteFile(cfg, []byte(kubeletConfig(c.State, c.CgroupRt, endpoint, c.PKI.CACert)), 0o644); err != nil {
		return err
	}
	return c.start("kubelet", filepath.Join(c.Bin, "kubelet"),
		"--config="+cfg,
		"--kubeconfig="+filepath.Join(c.State, "pki", "kubelet.kubeconfig"),
		"--root-dir="+filepath.Join(c.State, "kubelet"),
		"--hostname-override="+nodeName, "--node-ip="+nodeIP, "--v=2")
}

// Crictl runs crictl against a CRI endpoint, with its config in the state dir.
func (c *Cluster) Crictl(ctx context.Context, endpoint string, args ...string) (string, error) {
	cfg := filepath.Join(c.State, "crictl.yaml")
	conf := fmt.Sprintf("runtime-endpoint: %s\nimage-endpoint: %s\ntimeout: 30\n", endpoint, endpoint)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return "", err
	}
	return c.Exec(ctx, 60*time.Second, append([]string{filepath.Join(c.Bin, "crictl"), "--config", cfg}, args...)...)
}

// CRIShim is the project's CRI shim (bin/crishim): pods are namespaces, containers are host
// processes (no images: names are recorded), CNI through libcni.
type CRIShim struct {
	Bin   string
	sock  string
	flags []string
}

func (r *CRIShim) Name() string { return "crishim" }

func (r *CRIShim) dir(c *Cluster) string { return filepath.Join(c.State, "crishim") }

// CNICacheDir: the shim keeps libcni's cache in its state dir (the same path in the node).
func (r *CRIShim) CNICacheDir(c *Cluster) string {
	return filepath.Join(r.dir(c), "state", "cni-cache")
}

// WebRoot: the web "container" is a host process seeing the node's filesystem: its page goes
// to the state dir, never to a machine path.
func (r *CRIShim) WebRoot(c *Cluster) string { return filepath.Join(r.dir(c), "www") }

func (r *CRIShim) Start(ctx context.Context, c *Cluster) (string, error) {
	d := r.dir(c)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	r.sock = filepath.Join(d, "crishim.sock")
	r.flags = []string{"--cni-conf-dir", "/etc/cni/net.d", "--cni-bin-dir", "/opt/cni/bin",
		"--state-dir", filepath.Join(d, "state"), "--netns-dir", filepath.Join(d, "netns")}
	if err := c.start("crishim", r.Bin, append([]string{"--listen", r.sock}, r.flags...)...); err != nil {
		return "", err
	}
	endpoint := "unix://" + r.sock
	if err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "crishim socket", func() (bool, error) {
		if err := c.alive("crishim"); err != nil {
			return false, err
		}
		_, err := c.Crictl(ctx, endpoint, "version")
		return err == nil, err
	}); err != nil {
		return "", err
	}
	// The pods name the same image as under containerd; the shim records it (pullPolicy Never).
	if _, err := c.Crictl(ctx, endpoint, "pull", busyboxImage); err != nil {
		return "", fmt.Errorf("record the test image: %w", err)
	}
	return endpoint, nil
}

func (r *CRIShim) Teardown(ctx context.Context, c *Cluster) {
	if r.sock == "" {
		return
	}
	if c.procs["crishim"] != nil {
		if out, err := c.Crictl(ctx, "unix://"+r.sock, "rmp", "--all", "--force"); err != nil {
			c.logf("teardown: crictl rmp: %v", err)
		} else if s := strings.TrimSpace(out); s != "" {
			c.logf("teardown: removed pod sandboxes: %s", strings.ReplaceAll(s, "\n", ", "))
		}
		c.Stop("crishim", 10*time.Second)
	}
	// Whatever is left (a pod kubelet never stopped): CNI DEL, helpers killed, netns unmounted.
	if out, err := c.Exec(ctx, 60*time.Second, append([]string{r.Bin, "teardown"}, r.flags...)...); err != nil {
		c.logf("teardown: crishim teardown: %v: %s", err, lastLines(out, 5))
	}
}
