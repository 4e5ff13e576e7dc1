package installer

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

// A node's CNI dirs as a distribution leaves them: the reference plugins (one of them a symlink
// into a package dir, one with an odd mode and an old mtime), an unrelated plugin, and another
// network's config. Ours has no loopback-by-symlink in it, and no "loopback" at all, so install
// both replaces and adds.
func populateNode(t *testing.T) (bin, conf string) {
	t.Helper()
	root := t.TempDir()
	bin, conf = filepath.Join(root, "opt/cni/bin"), filepath.Join(root, "etc/cni/net.d")
	ref := refPluginDir(t)
	for _, n := range []string{"bridge", "host-local", "bandwidth"} {
		writeFile(t, filepath.Join(bin, n), mustRead(t, filepath.Join(ref, n)), 0o755)
	}
	os.Chmod(filepath.Join(bin, "host-local"), 0o750)
	old := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	os.Chtimes(filepath.Join(bin, "bridge"), old, old)
	pkg := filepath.Join(root, "usr/lib/cni")
	writeFile(t, filepath.Join(pkg, "portmap"), mustRead(t, filepath.Join(ref, "portmap")), 0o755)
	if err := os.Symlink("../../../usr/lib/cni/portmap", filepath.Join(bin, "portmap")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(conf, "20-other.conflist"), []byte(`{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"bandwidth"}]}`), 0o644)
	return bin, conf
}

func TestInstallThenUninstallLeavesDirsByteIdentical(t *testing.T) {
	bin, conf := populateNode(t)
	root := filepath.Dir(filepath.Dir(filepath.Dir(bin)))
	before := snapshot(t, root)

	src := srcDir(t, "suite", four...)
	res, err := InstallBins(BinOptions{Src: src, Dst: bin, Plugins: four, Logf: logTo(t)})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Action{"bridge": Replaced, "host-local": Replaced, "portmap": Replaced, "loopback": Installed}
	for _, r := range res {
		if r.Action != want[r.Name] {
			t.Errorf("%s: %s, want %s", r.Name, r.Action, want[r.Name])
		}
	}
	// The symlink was replaced by a file; its target in the package dir is untouched.
	if fi, _ := os.Lstat(filepath.Join(bin, "portmap")); !fi.Mode().IsRegular() {
		t.Errorf("portmap is %s after install, want a regular file", fi.Mode())
	}
	cfg, err := conflist.Render(conflist.NetParams{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WriteConflist(conf, conflist.ConfFileName(conflist.DefaultNetworkName), cfg); err != nil {
		t.Fatal(err)
	}
	if err := Uninstall(UninstallOptions{Dst: bin, ConfDir: conf, ConfName: conflist.ConfFileName(conflist.DefaultNetworkName), Logf: logTo(t)}); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); d != "" {
		t.Errorf("install + uninstall changed the node's dirs:\n%s", d)
	}
	// Again: nothing left to do, nothing changes.
	if err := Uninstall(UninstallOptions{Dst: bin, ConfDir: conf, ConfName: conflist.ConfFileName(conflist.DefaultNetworkName)}); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); d != "" {
		t.Errorf("a second uninstall changed the node's dirs:\n%s", d)
	}
}

// Upgrades in between do not lose the original: the backup is of what was there before the
// first install, not of our previous version.
func TestUninstallAfterUpgradesRestoresTheOriginal(t *testing.T) {
	bin := t.TempDir()
	writeFile(t, filepath.Join(bin, "bridge"), []byte("distro bridge"), 0o755)
	for _, v := range []string{"v1", "v2", "v3"} {
		if _, err := InstallBins(BinOptions{Src: srcDir(t, v, "bridge"), Dst: bin, Plugins: []string{"bridge"}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := Uninstall(UninstallOptions{Dst: bin}); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, filepath.Join(bin, "bridge"))); got != "distro bridge" {
		t.Errorf("bridge = %q, want the original back", got)
	}
	if _, err := os.Stat(filepath.Join(bin, StateDirName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state dir left behind: %v", err)
	}
}

// A binary someone replaced after we installed it is theirs now: uninstall leaves it.
func TestUninstallLeavesBinariesChangedSinceInstall(t *testing.T) {
	bin := t.TempDir()
	writeFile(t, filepath.Join(bin, "bridge"), []byte("distro bridge"), 0o755)
	if _, err := InstallBins(BinOptions{Src: srcDir(t, "v1", "bridge", "portmap"), Dst: bin, Plugins: []string{"bridge", "portmap"}}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bin, "bridge"), []byte("newer distro bridge"), 0o755)
	if err := Uninstall(UninstallOptions{Dst: bin, Logf: logTo(t)}); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, filepath.Join(bin, "bridge"))); got != "newer distro bridge" {
		t.Errorf("bridge = %q, want the newer file left alone", got)
	}
	if _, err := os.Stat(filepath.Join(bin, "portmap")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("our portmap not removed: %v", err)
	}
}

// The conflist goes first: when taking the binaries away fails, the config is already gone (no
// pod is started on a network whose plugins are half removed), and a second run finishes the job.
func TestUninstallRemovesConfigFirstAndResumes(t *testing.T) {
	bin, conf := populateNode(t)
	root := filepath.Dir(filepath.Dir(filepath.Dir(bin)))
	before := snapshot(t, root)
	if _, err := InstallBins(BinOptions{Src: srcDir(t, "suite", four...), Dst: bin, Plugins: four}); err != nil {
		t.Fatal(err)
	}
	name := conflist.ConfFileName(conflist.DefaultNetworkName)
	if _, err := WriteConflist(conf, name, []byte("{}\n")); err != nil {
		t.Fatal(err)
	}
	// Restoring into the bin dir fails.
	f := func(dir, step string) error {
		if dir == bin && step == "rename" {
			return errors.New("injected restore failure")
		}
		return nil
	}
	err := Uninstall(UninstallOptions{Dst: bin, ConfDir: conf, ConfName: name, fault: f})
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("err = %v, want the injected failure", err)
	}
	if _, err := os.Stat(filepath.Join(conf, name)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("conflist still there after a failed uninstall: %v", err)
	}
	if tf := tempFiles(t, root); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
	if err := Uninstall(UninstallOptions{Dst: bin, ConfDir: conf, ConfName: name}); err != nil {
		t.Fatal(err)
	}
	if d := diffSnapshots(before, snapshot(t, root)); d != "" {
		t.Errorf("after the resumed uninstall:\n%s", d)
	}
}

func TestUninstallWithoutRecordOnlyRemovesConfig(t *testing.T) {
	bin, conf := populateNode(t)
	name := conflist.ConfFileName(conflist.DefaultNetworkName)
	writeFile(t, filepath.Join(conf, name), []byte("{}"), 0o600)
	before := snapshot(t, bin)
	if err := Uninstall(UninstallOptions{Dst: bin, ConfDir: conf, ConfName: name, Logf: logTo(t)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(conf, name)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("conflist not removed: %v", err)
	}
	if d := diffSnapshots(before, snapshot(t, bin)); d != "" {
		t.Errorf("uninstall without a record touched the bin dir:\n%s", d)
	}
	if _, err := os.Stat(filepath.Join(conf, "20-other.conflist")); err != nil {
		t.Errorf("another network's config was touched: %v", err)
	}
}

// A backup that does not match its record is never put in place.
func TestUninstallRefusesCorruptBackup(t *testing.T) {
	bin := t.TempDir()
	writeFile(t, filepath.Join(bin, "bridge"), []byte("distro bridge"), 0o755)
	if _, err := InstallBins(BinOptions{Src: srcDir(t, "v1", "bridge"), Dst: bin, Plugins: []string{"bridge"}}); err != nil {
		t.Fatal(err)
	}
	ours := string(mustRead(t, filepath.Join(bin, "bridge")))
	writeFile(t, filepath.Join(bin, StateDirName, backupDir, "bridge"), []byte("distro brid"), 0o600)
	err := Uninstall(UninstallOptions{Dst: bin})
	if err == nil || !strings.Contains(err.Error(), "not restoring") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	if got := string(mustRead(t, filepath.Join(bin, "bridge"))); got != ours {
		t.Errorf("bridge = %q after a refused restore, want ours still", got)
	}
}
