package ociimage

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The archive through the real consumer: a private containerd (its own root, state and socket
// in a temp dir, in a private mount namespace, its CRI plugin off) imports it with `ctr images
// import`, as issue 18 loads the image for kubelet, under the name from the archive, and unpacks
// the layer with the native snapshotter, whose snapshot dirs are plain files to check.
func TestContainerdImportsArchive(t *testing.T) {
	for _, tool := range []string{"containerd", "ctr", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (Debian package containerd): %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a private containerd")
	}
	dir, err := os.MkdirTemp("", "cnis-ctrd-") // short: the socket path has a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	d := exec.Command("unshare", "--mount", "--propagation", "private", "containerd", "--config", cfgPath)
	d.Stdout, d.Stderr = &logs, &logs
	d.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.Process.Kill()
			<-done
		}
	})
	ctr := func(args ...string) (string, error) {
		out, err := exec.Command("ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("private containerd did not come up:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	im := testImage()
	var buf bytes.Buffer
	digest, err := im.WriteArchive(&buf)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "image.tar")
	os.WriteFile(archive, buf.Bytes(), 0o644)
	if out, err := ctr("images", "import", "--snapshotter", "native", archive); err != nil {
		t.Fatalf("ctr images import: %v\n%s\ncontainerd log:\n%s", err, out, logs.String())
	}
	out, err := ctr("images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "docker.io/cni-suite/cni-suite:test") || !strings.Contains(out, digest) {
		t.Fatalf("imported image not listed under its name and digest %s:\n%s", digest, out)
	}
	if out, err := ctr("images", "check"); err != nil || !strings.Contains(out, "complete") {
		t.Errorf("ctr images check: %v\n%s", err, out)
	}
	// The unpacked layer: our files with their modes.
	snaps, _ := filepath.Glob(filepath.Join(dir, "root", "io.containerd.snapshotter.v1.native", "snapshots", "*"))
	found := false
	for _, s := range snaps {
		b, err := os.ReadFile(filepath.Join(s, "opt/cni-suite/bin/install-cni"))
		if err != nil {
			continue
		}
		found = true
		fi, _ := os.Stat(filepath.Join(s, "opt/cni-suite/bin/install-cni"))
		if string(b) != "installer bytes" || fi.Mode().Perm() != 0o755 {
			t.Errorf("unpacked install-cni: %q mode %s", b, fi.Mode())
		}
	}
	if !found {
		t.Errorf("no unpacked snapshot holds the files (snapshots: %v)", snaps)
	}
}
