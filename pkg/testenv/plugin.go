package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/types/create"
)

// BinEnv names a directory holding already built plugin binaries (make test sets it to bin/).
const BinEnv = "CNI_SUITE_BIN"

// RefVersion is the reference plugins' release we are compatible with.
const RefVersion = "v1.9.1"

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// RepoRoot finds the module root (the directory holding go.mod) above the working directory.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// PluginDir returns a directory holding the suite's plugin binaries: $CNI_SUITE_BIN when set,
// otherwise a per-process build of ./plugins/... (cached by the go build cache).
func PluginDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv(BinEnv); d != "" {
		return d
	}
	root := RepoRoot(t)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "cni-suite-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", buildDir+"/", "./plugins/...")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./plugins/...: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildDir
}

// CacheDir is where the suite keeps built tools between runs ($CNI_SUITE_CACHE, else ~/.cache/cni-suite).
func CacheDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("CNI_SUITE_CACHE"); d != "" {
		return d
	}
	d, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(d, "cni-suite")
}

// RefPluginDir returns a directory with the reference plugins of the given release
// (e.g. "v1.9.1"), built with `go install` into the cache dir on first use. Test processes
// building it at once serialise on a flock.
func RefPluginDir(t testing.TB, release string) string {
	t.Helper()
	dir := filepath.Join(CacheDir(t), "ref-"+release)
	return goInstallOnce(t, dir, "portmap", "github.com/containernetworking/plugins/plugins/...@"+release)
}

// Cnitool returns the path of cnitool v1.3.1, built into the cache dir on first use.
func Cnitool(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(CacheDir(t), "tools")
	return filepath.Join(goInstallOnce(t, dir, "cnitool", "github.com/containernetworking/cni/cnitool@v1.3.1"), "cnitool")
}

// Crictl returns the path of crictl v1.37.0 (the CRI command-line client), built into the
// cache dir on first use (a few minutes on 2 cores).
func Crictl(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(CacheDir(t), "tools")
	return filepath.Join(goInstallOnce(t, dir, "crictl", "sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0"), "crictl")
}

func goInstallOnce(t testing.TB, dir, marker, pkg string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		return dir
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, marker)); err == nil {
		return dir
	}
	t.Logf("building %s into %s (once)", pkg, dir)
	cmd := exec.Command("go", "install", pkg)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", pkg, err, out)
	}
	return dir
}

// Call is one plugin execution, as a runtime makes it.
type Call struct {
	Bin         string // path of the plugin binary
	Command     string // CNI_COMMAND; empty leaves it unset
	ContainerID string
	Netns       string
	IfName      string
	Args        string // CNI_ARGS
	Path        string // CNI_PATH; defaults to the binary's directory
	Config      []byte // stdin
	In          *NS    // run the binary inside this netns (the node); nil: the caller's netns
	Env         []string
	Unset       []string // CNI_* variables to leave out
}

// Out is what a plugin execution produced.
type Out struct {
	Stdout, Stderr []byte
	ExitCode       int
	Err            *types.Error // decoded error JSON when ExitCode != 0
}

func (o Out) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", o.ExitCode, o.Stdout, o.Stderr)
}

// Run executes the plugin. It fails the test only when the binary cannot be started at all,
// or when it exits non-zero without an error object on stdout (the spec requires one).
func Run(t testing.TB, c Call) Out {
	t.Helper()
	env := []string{"PATH=" + os.Getenv("PATH")}
	set := map[string]string{
		"CNI_COMMAND": c.Command, "CNI_CONTAINERID": c.ContainerID, "CNI_NETNS": c.Netns,
		"CNI_IFNAME": c.IfName, "CNI_ARGS": c.Args, "CNI_PATH": c.Path,
	}
	if set["CNI_PATH"] == "" {
		set["CNI_PATH"] = filepath.Dir(c.Bin)
	}
	for k, v := range set {
		skip := v == "" && k != "CNI_ARGS"
		for _, u := range c.Unset {
			skip = skip || u == k
		}
		if !skip {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, c.Env...)
	var o Out
	run := func() error {
		cmd := exec.Command(c.Bin)
		cmd.Env = env
		cmd.Stdin = bytes.NewReader(c.Config)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		o.Stdout, o.Stderr = stdout.Bytes(), stderr.Bytes()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			o.ExitCode = ee.ExitCode()
			return nil
		}
		return err
	}
	var err error
	if c.In != nil {
		err = c.In.Do(run)
	} else {
		err = run()
	}
	if err != nil {
		t.Fatalf("run %s: %v", c.Bin, err)
	}
	if o.ExitCode != 0 {
		e := &types.Error{}
		if jerr := json.Unmarshal(o.Stdout, e); jerr != nil {
			t.Fatalf("%s %s exited %d without an error object on stdout: %v\n%s", filepath.Base(c.Bin), c.Command, o.ExitCode, jerr, o)
		}
		o.Err = e
	}
	return o
}

// MustSucceed fails the test unless the call exited 0.
func (o Out) MustSucceed(t testing.TB) Out {
	t.Helper()
	if o.ExitCode != 0 {
		t.Fatalf("plugin failed: %s", o)
	}
	return o
}

// MustFail fails the test unless the call failed with the given CNI error code.
func (o Out) MustFail(t testing.TB, code uint) Out {
	t.Helper()
	if o.ExitCode == 0 {
		t.Fatalf("plugin succeeded, want error code %d: %s", code, o)
	}
	if o.Err.Code != code {
		t.Fatalf("error code %d, want %d: %s", o.Err.Code, code, o)
	}
	return o
}

// Result decodes stdout as a result of the given cniVersion and converts it to the current one.
func (o Out) Result(t testing.TB, cniVersion string) *current.Result {
	t.Helper()
	r, err := create.Create(cniVersion, o.Stdout)
	if err != nil {
		t.Fatalf("decode %s result: %v\n%s", cniVersion, err, o.Stdout)
	}
	cur, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatalf("convert %s result: %v", cniVersion, err)
	}
	return cur
}

// ErrContains fails the test unless the error message or details contain every fragment.
func (o Out) ErrContains(t testing.TB, fragments ...string) {
	t.Helper()
	if o.Err == nil {
		t.Fatalf("no error: %s", o)
	}
	msg := o.Err.Msg + " " + o.Err.Details
	for _, f := range fragments {
		if !strings.Contains(msg, f) {
			t.Errorf("error %q does not mention %q", msg, f)
		}
	}
}
