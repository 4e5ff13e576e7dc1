package installer

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var four = []string{"bridge", "host-local", "portmap", "loopback"}

func TestInstallBinsFreshThenSkipThenUpgrade(t *testing.T) {
	src1, src2, dst := srcDir(t, "v1", four...), srcDir(t, "v2", four...), t.TempDir()

	res, err := InstallBins(BinOptions{Src: src1, Dst: dst, Plugins: four, Logf: logTo(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Action != Installed || r.Name != four[i] {
			t.Errorf("first install: %+v, want %s installed", r, four[i])
		}
		p := filepath.Join(dst, r.Name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != BinMode {
			t.Errorf("%s mode %s, want %s", p, fi.Mode(), BinMode)
		}
		if got, want := string(mustRead(t, p)), string(mustRead(t, filepath.Join(src1, r.Name))); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}

	// Same bytes again: nothing is rewritten (same inode, same mtime).
	before := snapshot(t, dst)
	inode := func(p string) uint64 {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	ino := inode(filepath.Join(dst, "bridge"))
	res, err = InstallBins(BinOptions{Src: src1, Dst: dst, Plugins: four})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Action != Unchanged {
			t.Errorf("second install of the same bytes: %+v, want unchanged", r)
		}
	}
	if d := diffSnapshots(before, snapshot(t, dst)); d != "" {
		t.Errorf("an unchanged install changed the dir:\n%s", d)
	}
	if inode(filepath.Join(dst, "bridge")) != ino {
		t.Error("an unchanged install replaced the file")
	}

	// A new version of ours: upgraded, and no backup of our own old version.
	res, err = InstallBins(BinOptions{Src: src2, Dst: dst, Plugins: four})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Action != Upgraded {
			t.Errorf("install of v2 over v1: %+v, want upgraded", r)
		}
		if got := string(mustRead(t, filepath.Join(dst, r.Name))); !strings.Contains(got, "v2") {
			t.Errorf("%s = %q after upgrade", r.Name, got)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dst, StateDirName, backupDir)); len(entries) != 0 {
		t.Errorf("upgrading our own binaries made backups: %v", entries)
	}
	if tf := tempFiles(t, dst); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
}

func TestInstallBinsBadSourceTouchesNothing(t *testing.T) {
	cases := []struct {
		name    string
		setup   func(src string)
		plugins []string
		want    string
	}{
		{"missing", func(src string) { os.Remove(filepath.Join(src, "portmap")) }, four, "portmap"},
		{"empty", func(src string) { os.WriteFile(filepath.Join(src, "portmap"), nil, 0o755) }, four, "not a non-empty regular file"},
		{"directory", func(src string) {
			os.Remove(filepath.Join(src, "portmap"))
			os.Mkdir(filepath.Join(src, "portmap"), 0o755)
		}, four, "not a non-empty regular file"},
		{"path in name", func(string) {}, []string{"bridge", "../etc/passwd"}, "invalid plugin name"},
		{"hidden name", func(string) {}, []string{".cni-suite-install"}, "invalid plugin name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src, dst := srcDir(t, "v1", four...), t.TempDir()
			writeFile(t, filepath.Join(dst, "bridge"), []byte("old bridge"), 0o755)
			c.setup(src)
			before := snapshot(t, dst)
			_, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: c.plugins})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, c.want)
			}
			if d := diffSnapshots(before, snapshot(t, dst)); d != "" {
				t.Errorf("a failed install changed the destination:\n%s", d)
			}
		})
	}
}

func TestInstallBinsRefusesDirectoryTarget(t *testing.T) {
	src, dst := srcDir(t, "v1", "bridge"), t.TempDir()
	os.Mkdir(filepath.Join(dst, "bridge"), 0o755)
	_, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: []string{"bridge"}})
	if err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("err = %v, want 'is a directory'", err)
	}
	if tf := tempFiles(t, dst); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
}

// Every step of the write can fail: the target keeps its old bytes (or stays absent), no temp file
// is left in the bin dir, and a later run succeeds.
func TestInstallBinsInjectedFailureLeavesNoTemp(t *testing.T) {
	steps := []string{"create", "write", "chmod", "sync", "close", "rename"}
	for _, existed := range []bool{false, true} {
		for _, step := range steps {
			t.Run(fmt.Sprintf("existing=%v/%s", existed, step), func(t *testing.T) {
				src, dst := srcDir(t, "v2", "bridge"), t.TempDir()
				if existed {
					writeFile(t, filepath.Join(dst, "bridge"), []byte("someone else's bridge"), 0o755)
				}
				before := mustReadOrNil(filepath.Join(dst, "bridge"))
				// Fail the step only for the binary itself (writes into dst), not for the
				// record and backup writes under the state dir.
				f := func(dir, s string) error {
					if dir == dst && s == step {
						return errors.New("injected " + s + " failure")
					}
					return nil
				}
				_, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: []string{"bridge"}, fault: f})
				if err == nil || !strings.Contains(err.Error(), "injected") {
					t.Fatalf("err = %v, want the injected failure", err)
				}
				if got := mustReadOrNil(filepath.Join(dst, "bridge")); string(got) != string(before) {
					t.Errorf("target changed by a failed install: %q, was %q", got, before)
				}
				if tf := tempFiles(t, dst); len(tf) != 0 {
					t.Errorf("temp files left after a %s failure: %v", step, tf)
				}
				// The failure is not sticky.
				if _, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: []string{"bridge"}}); err != nil {
					t.Fatal(err)
				}
				if got := string(mustRead(t, filepath.Join(dst, "bridge"))); !strings.Contains(got, "v2") {
					t.Errorf("retry did not install: %q", got)
				}
			})
		}
	}
}

func mustReadOrNil(p string) []byte {
	b, _ := os.ReadFile(p)
	return b
}

// A failed verification (the new binary cannot run here) keeps the old binary.
func TestInstallBinsVerifyExecRejectsUnrunnable(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(src, "bridge"), []byte("\x7fELF this is not a real binary"), 0o755)
	old := exe(t, 1, 16)
	writeFile(t, filepath.Join(dst, "bridge"), old, 0o755)
	_, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: []string{"bridge"}, VerifyExec: true})
	if err == nil || !strings.Contains(err.Error(), "verify") {
		t.Fatalf("err = %v, want a verify error", err)
	}
	if sum(mustRead(t, filepath.Join(dst, "bridge"))) != sum(old) {
		t.Error("an unrunnable binary replaced a working one")
	}
	if tf := tempFiles(t, dst); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
	// /bin/true runs but is not a CNI plugin: it prints no version object.
	writeFile(t, filepath.Join(src, "bridge"), exe(t, 2, 16), 0o755)
	if _, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: []string{"bridge"}, VerifyExec: true}); err == nil || !strings.Contains(err.Error(), "version object") {
		t.Fatalf("err = %v, want 'did not print a CNI version object'", err)
	}
}

// The real thing: the reference plugins pass the exec check.
func TestInstallBinsVerifyExecRealPlugins(t *testing.T) {
	ref := refPluginDir(t)
	dst := t.TempDir()
	res, err := InstallBins(BinOptions{Src: ref, Dst: dst, Plugins: four, VerifyExec: true, Logf: logTo(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 {
		t.Fatalf("results %+v", res)
	}
}

// A runtime is running the old binary while it is replaced: writing it in place is refused by the
// kernel ("text file busy"); the installer's rename is not, and the running process is unharmed.
func TestInstallBinsReplacesRunningBinary(t *testing.T) {
	dst, src := t.TempDir(), t.TempDir()
	sleepBin, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip("no /bin/sleep")
	}
	writeFile(t, filepath.Join(dst, "bridge"), sleepBin, 0o755)
	writeFile(t, filepath.Join(src, "bridge"), exe(t, 3, 1<<20), 0o755)
	cmd := exec.Command(filepath.Join(dst, "bridge"), "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	time.Sleep(50 * time.Millisecond) // let it get past execve

	// Control: an in-place write fails while the binary runs.
	if f, err := os.OpenFile(filepath.Join(dst, "bridge"), os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Log("this kernel allows writing a running binary; the control shows nothing here")
	} else if !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("control: open for writing: %v, want ETXTBSY", err)
	}

	res, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: []string{"bridge"}})
	if err != nil {
		t.Fatalf("install over a running binary: %v", err)
	}
	if res[0].Action != Replaced {
		t.Errorf("action %s, want replaced", res[0].Action)
	}
	if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("the running old binary died: %v", err)
	}
	if out, err := exec.Command(filepath.Join(dst, "bridge")).CombinedOutput(); err != nil {
		t.Errorf("new binary does not run: %v %s", err, out)
	}
	// The backup is the old binary, byte for byte.
	if sum(mustRead(t, filepath.Join(dst, StateDirName, backupDir, "bridge"))) != sum(sleepBin) {
		t.Error("backup differs from the replaced binary")
	}
}

// A separate process execs the binary in a tight loop while it is replaced again and again:
// every exec succeeds (never a half-written file, never "text file busy").
func TestInstallBinsConcurrentExecLoop(t *testing.T) {
	dst, stop := t.TempDir(), filepath.Join(t.TempDir(), "stop")
	v := [2][]byte{exe(t, 1, 4<<20), exe(t, 2, 4<<20+4096)}
	srcs := [2]string{t.TempDir(), t.TempDir()}
	for i := range srcs {
		writeFile(t, filepath.Join(srcs[i], "bridge"), v[i], 0o755)
	}
	if _, err := InstallBins(BinOptions{Src: srcs[0], Dst: dst, Plugins: []string{"bridge"}}); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	loop := exec.Command(self)
	loop.Env = append(os.Environ(), envExecLoop+"="+filepath.Join(dst, "bridge"), envExecStop+"="+stop)
	out, err := loop.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := loop.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ok, failed int
	var failures []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			mu.Lock()
			if sc.Text() == "ok" {
				ok++
			} else {
				failed++
				if len(failures) < 5 {
					failures = append(failures, sc.Text())
				}
			}
			mu.Unlock()
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return ok + failed }
	for count() == 0 { // the loop is running before the first replacement
		time.Sleep(time.Millisecond)
	}
	start := count()
	rounds := 0
	// At least 20 replacements, and at least 200 execs while they happen (bounded: 60 s).
	deadline := time.Now().Add(60 * time.Second)
	for rounds < 20 || count()-start < 200 {
		if time.Now().After(deadline) {
			break
		}
		rounds++
		if _, err := InstallBins(BinOptions{Src: srcs[rounds%2], Dst: dst, Plugins: []string{"bridge"}}); err != nil {
			t.Fatalf("round %d: %v", rounds, err)
		}
	}
	during := count() - start
	os.WriteFile(stop, nil, 0o600)
	<-done
	loop.Wait()
	t.Logf("%d replacements, %d execs during them; %d ok, %d failed in all", rounds, during, ok, failed)
	if failed > 0 {
		t.Errorf("%d execs failed while the binary was replaced, e.g.:\n%s", failed, strings.Join(failures, "\n"))
	}
	if rounds < 20 || during < 200 {
		t.Errorf("too little overlap to mean anything: %d rounds, %d execs", rounds, during)
	}
	if tf := tempFiles(t, dst); len(tf) != 0 {
		t.Errorf("temp files left: %v", tf)
	}
}

// Several installers at once (a rolling update overlapping two pods on a node) serialise on the
// record's lock and all succeed.
func TestInstallBinsConcurrentInstallers(t *testing.T) {
	dst := t.TempDir()
	writeFile(t, filepath.Join(dst, "bridge"), []byte("reference bridge"), 0o755)
	srcs := []string{srcDir(t, "v1", four...), srcDir(t, "v2", four...)}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := InstallBins(BinOptions{Src: srcs[i%2], Dst: dst, Plugins: four})
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// The backup is still the reference bridge, not one of our versions.
	if got := string(mustRead(t, filepath.Join(dst, StateDirName, backupDir, "bridge"))); got != "reference bridge" {
		t.Errorf("backup = %q, want the original", got)
	}
	if err := Uninstall(UninstallOptions{Dst: dst}); err != nil {
		t.Fatal(err)
	}
	if got := string(mustRead(t, filepath.Join(dst, "bridge"))); got != "reference bridge" {
		t.Errorf("after uninstall bridge = %q, want the original back", got)
	}
}

func TestStaleTempsFromKilledRunAreRemoved(t *testing.T) {
	src, dst := srcDir(t, "v1", "bridge"), t.TempDir()
	stale := filepath.Join(dst, tempPrefix+"bridge-123"+tempSuffix)
	writeFile(t, stale, []byte("half a binary"), 0o600)
	other := filepath.Join(dst, "unrelated.tmp")
	writeFile(t, other, []byte("not ours"), 0o600)
	if _, err := InstallBins(BinOptions{Src: src, Dst: dst, Plugins: []string{"bridge"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale temp file still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("someone else's file was touched: %v", err)
	}
}
