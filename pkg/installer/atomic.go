// Package installer puts the suite on a node: it copies the plugin binaries into the runtime's
// CNI bin dir, renders the network config list into its conf dir, and takes both away again,
// always so that a runtime reading those directories at any moment sees either the old file or
// the new one, never a partial one.
package installer

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Temp files are named ".install-cni-<target>-<random>.tmp": a runtime loads configs by their
// .conf/.conflist/.json extension and runs plugins by their type name, so it never picks one up.
const (
	tempPrefix = ".install-cni-"
	tempSuffix = ".tmp"
)

// staleTempAge is how old a temp file of ours must be before a later run removes it: younger ones
// may belong to another installer writing at this very moment (a rolling update overlaps pods).
const staleTempAge = time.Minute

// fault lets tests fail one step ("create", "write", "chmod", "sync", "close", "rename") of an
// atomic write into dir. Nil in production.
type fault func(dir, step string) error

func (f fault) at(dir, step string) error {
	if f == nil {
		return nil
	}
	return f(dir, step)
}

// writeSpec says what an atomic write puts in place.
type writeSpec struct {
	dir, name string
	perm      fs.FileMode
	src       io.Reader
	// prepare runs on the complete, closed temp file just before the rename (verify, chown, chtimes).
	prepare func(tmp string) error
	fault   fault
}

// writeAtomic writes src to a temp file in dir, sets its mode, fsyncs it, runs prepare, renames it
// over dir/name and fsyncs dir. On any error the temp file is removed and dir/name is untouched.
// It returns the SHA-256 of what it wrote.
func writeAtomic(w writeSpec) (sum string, err error) {
	if err := w.fault.at(w.dir, "create"); err != nil {
		return "", fmt.Errorf("create temp file in %s: %w", w.dir, err)
	}
	f, err := os.CreateTemp(w.dir, tempPrefix+w.name+"-*"+tempSuffix)
	if err != nil {
		return "", fmt.Errorf("create temp file in %s: %w", w.dir, err)
	}
	tmp := f.Name()
	open := true
	defer func() {
		if err != nil {
			if open {
				f.Close()
			}
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	if _, err = io.Copy(io.MultiWriter(f, h), w.src); err == nil {
		err = w.fault.at(w.dir, "write")
	}
	if err != nil {
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	if err = f.Chmod(w.perm); err == nil {
		err = w.fault.at(w.dir, "chmod")
	}
	if err != nil {
		return "", fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if err = f.Sync(); err == nil {
		err = w.fault.at(w.dir, "sync")
	}
	if err != nil {
		return "", fmt.Errorf("fsync %s: %w", tmp, err)
	}
	open = false
	if err = f.Close(); err == nil {
		err = w.fault.at(w.dir, "close")
	}
	if err != nil {
		return "", fmt.Errorf("close %s: %w", tmp, err)
	}
	if w.prepare != nil {
		if err = w.prepare(tmp); err != nil {
			return "", err
		}
	}
	target := filepath.Join(w.dir, w.name)
	if err = w.fault.at(w.dir, "rename"); err == nil {
		err = os.Rename(tmp, target)
	}
	if err != nil {
		return "", fmt.Errorf("rename %s to %s: %w", tmp, target, err)
	}
	if err := syncDir(w.dir); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// symlinkAtomic makes dir/name a symlink to target by renaming a fresh symlink over it.
func symlinkAtomic(dir, name, target string) error {
	f, err := os.CreateTemp(dir, tempPrefix+name+"-*"+tempSuffix)
	if err != nil {
		return fmt.Errorf("reserve temp name in %s: %w", dir, err)
	}
	tmp := f.Name()
	f.Close()
	if err := os.Remove(tmp); err != nil {
		return fmt.Errorf("reserve temp name in %s: %w", dir, err)
	}
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("symlink %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename %s to %s: %w", tmp, filepath.Join(dir, name), err)
	}
	return syncDir(dir)
}

// removeDurable removes dir/name (a missing file is no error) and fsyncs dir.
func removeDurable(dir, name string) (removed bool, err error) {
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("remove %s: %w", filepath.Join(dir, name), err)
	}
	return true, syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open %s for fsync: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// isTempName tells whether a directory entry is one of our temp files.
func isTempName(name string) bool {
	return strings.HasPrefix(name, tempPrefix) && strings.HasSuffix(name, tempSuffix)
}

// removeStaleTemps removes temp files of ours older than maxAge in dir (left by a killed run).
func removeStaleTemps(dir string, maxAge time.Duration, logf func(string, ...any)) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !isTempName(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < maxAge {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
			logf("removed stale temp file %s", filepath.Join(dir, e.Name()))
		}
	}
}

// fileSHA256 hashes a file's content (following symlinks).
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
