package installer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// The test binary doubles as a "runtime" process that execs a path in a loop (see execLoop).
const (
	envExecLoop = "INSTALLER_TEST_EXEC_LOOP"
	envExecStop = "INSTALLER_TEST_EXEC_STOP"
)

func TestMain(m *testing.M) {
	if p := os.Getenv(envExecLoop); p != "" {
		os.Exit(execLoop(p, os.Getenv(envExecStop)))
	}
	os.Exit(m.Run())
}

// execLoop execs path until the stop file exists, printing "ok" or "fail <error>" per exec.
// It is a separate process, as a container runtime is: nothing in it holds the installer's files.
func execLoop(path, stop string) int {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for {
		if _, err := os.Stat(stop); err == nil {
			return 0
		}
		out, err := exec.Command(path).CombinedOutput()
		if err != nil {
			fmt.Fprintf(w, "fail %v %q\n", err, out)
		} else {
			fmt.Fprintln(w, "ok")
		}
		w.Flush()
	}
}

// exe returns a runnable binary (a copy of /bin/true) padded with size bytes of fill: variants
// with different fills are different files that all exit 0, and big enough that a reader of a
// half-written one would notice (a truncated ELF does not run).
func exe(t testing.TB, fill byte, size int) []byte {
	t.Helper()
	b, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatalf("need /bin/true: %v", err)
	}
	return append(b, bytes.Repeat([]byte{fill}, size)...)
}

func writeFile(t testing.TB, path string, data []byte, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// srcDir makes a source dir with the given plugin names, each a distinct small file.
func srcDir(t testing.TB, version string, names ...string) string {
	t.Helper()
	d := t.TempDir()
	for _, n := range names {
		writeFile(t, filepath.Join(d, n), []byte("#!plugin "+n+" "+version+"\n"), 0o755)
	}
	return d
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// entry is what snapshot records of one path.
type entry struct {
	Mode  fs.FileMode
	Sum   string // regular files
	Link  string // symlinks
	MTime time.Time
	UID   int
	GID   int
}

// snapshot records every path under dir (recursively): type, mode, owner, content hash, symlink
// target and, for files, mtime. Two equal snapshots mean a byte-identical tree.
func snapshot(t testing.TB, dir string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		uid, gid := owner(fi)
		e := entry{Mode: fi.Mode(), UID: uid, GID: gid}
		switch {
		case fi.Mode().IsRegular():
			e.Sum = sum(mustRead(t, p))
			e.MTime = fi.ModTime()
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Link, _ = os.Readlink(p)
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(a, b map[string]entry) string {
	var keys []string
	seen := map[string]bool{}
	for k := range a {
		keys, seen[k] = append(keys, k), true
	}
	for k := range b {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var d []string
	for _, k := range keys {
		ea, okA := a[k]
		eb, okB := b[k]
		switch {
		case !okA:
			d = append(d, "+ "+k)
		case !okB:
			d = append(d, "- "+k)
		case ea != eb:
			d = append(d, fmt.Sprintf("~ %s: %+v -> %+v", k, ea, eb))
		}
	}
	return strings.Join(d, "\n")
}

// tempFiles lists our temp files anywhere under dir.
func tempFiles(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && isTempName(d.Name()) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func logTo(t testing.TB) func(string, ...any) {
	return func(f string, a ...any) { t.Logf(f, a...) }
}

// refPluginDir is the reference plugins v1.9.1, built once into the cache dir.
func refPluginDir(t testing.TB) string {
	t.Helper()
	return testenv.RefPluginDir(t, testenv.RefVersion)
}
