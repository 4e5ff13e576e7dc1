package installer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// DefaultPlugins are the binaries `install-cni bins` installs: the suite's four reference types.
var DefaultPlugins = []string{"bridge", "host-local", "portmap", "loopback"}

// BinMode is the mode of every installed plugin binary.
const BinMode fs.FileMode = 0o755

// BinOptions configures InstallBins.
type BinOptions struct {
	Src     string   // directory holding the binaries to install
	Dst     string   // the runtime's CNI bin dir (e.g. /opt/cni/bin, or /host/opt/cni/bin in a pod)
	Plugins []string // file names to install; DefaultPlugins when empty
	// VerifyExec runs each new binary with CNI_COMMAND=VERSION before it goes live, so a binary
	// that cannot run on this node (wrong architecture, truncated) never replaces a working one.
	VerifyExec bool
	Logf       func(format string, args ...any)

	fault fault
}

// Action is what InstallBins did with one binary.
type Action string

const (
	Installed Action = "installed" // there was no such file
	Upgraded  Action = "upgraded"  // replaced a version the installer had put there
	Replaced  Action = "replaced"  // replaced someone else's file, which is kept as a backup
	Unchanged Action = "unchanged" // the destination already had the same bytes
)

// BinResult reports one binary.
type BinResult struct {
	Name   string
	Action Action
	SHA256 string
}

func (o *BinOptions) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// ValidPluginName rejects names that are not a plain file name.
func ValidPluginName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("invalid plugin name %q: want a plain file name", name)
	}
	return nil
}

// InstallBins copies each plugin from Src to Dst. A binary whose destination already holds the
// same bytes is skipped. Otherwise the new bytes go to a temp file in Dst, which is made 0755,
// fsynced, optionally test-run, then renamed over the target: a runtime exec'ing the old binary at
// that moment keeps running it (the old inode lives on), and one exec'ing it a moment later gets the
// complete new file; nothing ever opens the target for writing, so there is no "text file busy".
// A different file that was there before (the reference plugins, a distribution's package) is
// kept under Dst/.cni-suite-install/backup for Uninstall to restore. Each binary is verified by
// hash after the rename.
func InstallBins(o BinOptions) ([]BinResult, error) {
	plugins := o.Plugins
	if len(plugins) == 0 {
		plugins = DefaultPlugins
	}
	for _, p := range plugins {
		if err := ValidPluginName(p); err != nil {
			return nil, err
		}
	}
	// Check every source before touching the destination: all or nothing is not possible across
	// files, but a missing source should not leave a half-updated set behind.
	srcSums := make(map[string]string, len(plugins))
	for _, p := range plugins {
		path := filepath.Join(o.Src, p)
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("source binary %s: %w", path, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() == 0 {
			return nil, fmt.Errorf("source binary %s: not a non-empty regular file", path)
		}
		sum, err := fileSHA256(path)
		if err != nil {
			return nil, fmt.Errorf("source binary %s: %w", path, err)
		}
		srcSums[p] = sum
	}
	if err := os.MkdirAll(o.Dst, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", o.Dst, err)
	}
	s, err := openStore(o.Dst, true, o.fault)
	if err != nil {
		return nil, err
	}
	defer s.close()
	removeStaleTemps(o.Dst, 0, o.logf) // we hold the lock: no other installer is writing here
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	var results []BinResult
	for _, p := range plugins {
		act, err := installOne(&o, s, st, p, srcSums[p])
		if err != nil {
			return results, fmt.Errorf("install %s: %w", p, err)
		}
		o.logf("%s %s (sha256 %s)", act, filepath.Join(o.Dst, p), srcSums[p][:12])
		results = append(results, BinResult{Name: p, Action: act, SHA256: srcSums[p]})
	}
	return results, nil
}

func installOne(o *BinOptions, s *store, st *state, name, srcSum string) (Action, error) {
	dstPath := filepath.Join(o.Dst, name)
	rec := st.Binaries[name]
	act := Installed
	var foreign fs.FileInfo
	li, err := os.Lstat(dstPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return "", err
	case li.IsDir():
		return "", fmt.Errorf("%s is a directory", dstPath)
	case !li.Mode().IsRegular() && li.Mode()&fs.ModeSymlink == 0:
		return "", fmt.Errorf("%s is not a regular file or symlink (%s)", dstPath, li.Mode().Type())
	default:
		cur, _ := fileSHA256(dstPath) // "" for a dangling symlink or an unreadable file
		if cur == srcSum {
			if li.Mode().IsRegular() && li.Mode().Perm() != BinMode {
				if err := os.Chmod(dstPath, BinMode); err != nil {
					return "", err
				}
			}
			return Unchanged, nil
		}
		if rec != nil && rec.ours(cur) {
			act = Upgraded
		} else {
			act, foreign = Replaced, li
		}
	}
	if rec == nil {
		rec = &record{}
		st.Binaries[name] = rec
	}
	if foreign != nil {
		b, err := makeBackup(s, o.Dst, name, foreign)
		if err != nil {
			return "", fmt.Errorf("back up %s: %w", dstPath, err)
		}
		rec.Backup = b
	}
	// Record the new hash before the rename: if we die in between, the file there is still one
	// the record knows (an older version of ours, or the backed-up original), so Uninstall stays right.
	rec.add(srcSum)
	if err := s.save(st); err != nil {
		return "", err
	}
	src, err := os.Open(filepath.Join(o.Src, name))
	if err != nil {
		return "", err
	}
	defer src.Close()
	var prepare func(string) error
	if o.VerifyExec {
		prepare = func(tmp string) error { return verifyPlugin(tmp) }
	}
	wrote, err := writeAtomic(writeSpec{dir: o.Dst, name: name, perm: BinMode, src: src, prepare: prepare, fault: o.fault})
	if err != nil {
		return "", err
	}
	if wrote != srcSum {
		return "", fmt.Errorf("source %s changed while being copied", filepath.Join(o.Src, name))
	}
	return act, verifyInstalled(dstPath, srcSum)
}

// verifyInstalled checks, after the rename, that the target is a 0755 regular file with the bytes.
func verifyInstalled(path, want string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != BinMode {
		return fmt.Errorf("verify %s: mode %s, want a regular file with mode %s", path, fi.Mode(), BinMode)
	}
	got, err := fileSHA256(path)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if got != want {
		return fmt.Errorf("verify %s: sha256 %s after install, want %s", path, got, want)
	}
	return nil
}

// verifyPlugin runs a CNI plugin binary with CNI_COMMAND=VERSION and checks it answers with a
// version object, as every plugin built on pkg/skel does.
func verifyPlugin(path string) error {
	var out []byte
	var err error
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, path)
		cmd.Env = []string{"CNI_COMMAND=VERSION"}
		cmd.Stdin = bytes.NewReader([]byte("{}"))
		out, err = cmd.Output()
		cancel()
		// A fork by another goroutine of this process may briefly hold the just-closed temp
		// file's write descriptor (golang.org/issue/22315): retry that one error.
		if err != nil && isTextBusy(err) && try < 20 {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		break
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("verify: %s with CNI_COMMAND=VERSION exited %d: %s%s", path, ee.ExitCode(), out, ee.Stderr)
		}
		return fmt.Errorf("verify: cannot run %s on this node (another architecture?): %w", path, err)
	}
	var v struct {
		CNIVersion        string   `json:"cniVersion"`
		SupportedVersions []string `json:"supportedVersions"`
	}
	if jerr := json.Unmarshal(out, &v); jerr != nil || v.CNIVersion == "" || len(v.SupportedVersions) == 0 {
		return fmt.Errorf("verify: %s with CNI_COMMAND=VERSION did not print a CNI version object: %q", path, out)
	}
	return nil
}

// makeBackup saves a foreign file (or symlink) at Dst/name before it is replaced.
func makeBackup(s *store, dst, name string, fi fs.FileInfo) (*backup, error) {
	uid, gid := owner(fi)
	b := &backup{Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), UID: uid, GID: gid, ModTime: fi.ModTime()}
	path := filepath.Join(dst, name)
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(path)
		if err != nil {
			return nil, err
		}
		b.Symlink = target
		os.Remove(s.backupPath(name))
		return b, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sum, err := writeAtomic(writeSpec{dir: filepath.Dir(s.backupPath(name)), name: name, perm: 0o600, src: f, fault: s.fault})
	if err != nil {
		return nil, err
	}
	b.SHA256 = sum
	return b, nil
}

// restoreBackup puts a backed-up file back at Dst/name, atomically, with its mode, owner and mtime.
func restoreBackup(s *store, dst, name string, b *backup) error {
	if b.Symlink != "" {
		return symlinkAtomic(dst, name, b.Symlink)
	}
	// Check the backup before it goes anywhere near the bin dir.
	if got, err := fileSHA256(s.backupPath(name)); err != nil {
		return fmt.Errorf("read backup: %w", err)
	} else if got != b.SHA256 {
		return fmt.Errorf("backup %s has sha256 %s, recorded %s: not restoring it", s.backupPath(name), got, b.SHA256)
	}
	f, err := os.Open(s.backupPath(name))
	if err != nil {
		return err
	}
	defer f.Close()
	prepare := func(tmp string) error {
		if fi, err := os.Lstat(tmp); err == nil {
			if uid, gid := owner(fi); uid != b.UID || gid != b.GID {
				if err := os.Lchown(tmp, b.UID, b.GID); err != nil {
					return fmt.Errorf("restore owner %d:%d: %w", b.UID, b.GID, err)
				}
			}
		}
		if err := os.Chmod(tmp, b.Mode); err != nil { // after chown, which clears setuid bits
			return err
		}
		return os.Chtimes(tmp, b.ModTime, b.ModTime)
	}
	_, err = writeAtomic(writeSpec{dir: dst, name: name, perm: b.Mode.Perm(), src: f, prepare: prepare, fault: s.fault})
	return err
}
