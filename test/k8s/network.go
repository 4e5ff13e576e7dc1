package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// suitePlugins are the binaries the suite's conflist needs (loopback: containerd sets up lo
// with it).
var suitePlugins = []string{"bridge", "host-local", "portmap", "loopback"}

const conflistName = "10-cni-suite.conflist"

// renderConflist renders the suite's network config for one node's podCIDR, as DESIGN.md says:
// cniVersion 1.0.0 with cniVersions [1.0.0, 1.1.0] (containerd 1.6 fails every ADD on a 1.1.0
// conflist), bridge cni0 with isGateway, ipMasq, hairpinMode (hostPort hairpin needs it),
// host-local over the podCIDR with a default route, portmap with portMappings and snat.
func renderConflist(podCIDR string) ([]byte, error) {
	conf := map[string]any{
		"cniVersion":  "1.0.0",
		"cniVersions": []string{"1.0.0", "1.1.0"},
		"name":        "cni-suite",
		"plugins": []any{
			map[string]any{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      true,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": podCIDR}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{
				"type":         "portmap",
				"capabilities": map[string]bool{"portMappings": true},
				"snat":         true,
			},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}

// DirectNetwork installs plugin binaries from a directory (the suite's bin/ or the reference
// release) and the rendered conflist straight into the node's CNI dirs, as an operator would
// by hand: the path until the DaemonSet installer exists.
type DirectNetwork struct {
	Label  string // "suite bin/" or "reference v1.9.1"
	BinDir string
}

func (d *DirectNetwork) Install(ctx context.Context, c *Cluster, podCIDR string) error {
	dst := c.Path("/opt/cni/bin")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, p := range suitePlugins {
		if err := copyFile(filepath.Join(d.BinDir, p), filepath.Join(dst, p), 0o755); err != nil {
			return err
		}
	}
	conf, err := renderConflist(podCIDR)
	if err != nil {
		return err
	}
	dir := c.Path("/etc/cni/net.d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// temp name no runtime loads (no .conf/.conflist/.json suffix), then rename
	tmp := filepath.Join(dir, "."+conflistName+".tmp")
	if err := os.WriteFile(tmp, conf, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, conflistName))
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("plugin binary: %w", err)
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// apiServerForInstaller is the address the hostNetwork installer is pointed at: nothing routes
// the kubernetes Service's ClusterIP here (no kube-proxy), as on many clusters while the network
// is being installed. 127.0.0.1 is in the apiserver certificate's SANs.
const apiServerForInstaller = "https://127.0.0.1:6443"

// DeployNetwork is the operator's path: the image from `make image` imported into the runtime
// (no registry), `kubectl apply -f deploy/`, and the API server address set as the README says.
type DeployNetwork struct {
	Repo    string
	Archive string // bin/cni-suite-image.tar
	Image   string // the name deploy/daemonset.yaml uses
	rt      *Containerd
}

func (d *DeployNetwork) Describe() string {
	return "make image + kubectl apply -f deploy/ (" + d.Image + ")"
}

func (d *DeployNetwork) Install(ctx context.Context, c *Cluster, podCIDR string) error {
	if err := d.rt.ImportImage(ctx, c, d.Archive); err != nil {
		return fmt.Errorf("import %s: %w", d.Archive, err)
	}
	if _, err := c.Kubectl(ctx, 60*time.Second, "apply", "-f", filepath.Join(d.Repo, "deploy")); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, 30*time.Second, "-n", "kube-system", "set", "env", "ds/cni-suite",
		"CNI_SUITE_API_SERVER="+apiServerForInstaller); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, 120*time.Second, "-n", "kube-system", "rollout", "status", "ds/cni-suite", "--timeout=110s")
	return err
}

// ShimNetwork is the path for the CRI shim, which runs no images: `make install` puts the
// suite's binaries into the shim's CNI bin dir (in the node, through DESTDIR), and the installer
// binary, run on the node, writes the conflist from the Node's podCIDR.
type ShimNetwork struct{ Repo string }

func (s *ShimNetwork) Describe() string {
	return "make install into the node's /opt/cni/bin + bin/install-cni config from the Node's podCIDR"
}

func (s *ShimNetwork) Install(ctx context.Context, c *Cluster, podCIDR string) error {
	// DESTDIR=/proc/<holder>/root: the install lands in the node's view of /opt/cni/bin (an
	// overlay in the state dir), never in the machine's.
	cmd := exec.CommandContext(ctx, "make", "-C", s.Repo, "install", "DESTDIR="+c.Path(""))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make install: %w: %s", err, lastLines(string(out), 10))
	}
	_, err := c.Exec(ctx, 60*time.Second, filepath.Join(s.Repo, "bin", "install-cni"), "config", "--once",
		"--conf-dir", "/etc/cni/net.d", "--bin-dir", "/opt/cni/bin", "--node-name", nodeName,
		"--kubeconfig", c.AdminConf)
	return err
}
