package installer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

// WriteConflist puts data at dir/file (mode 0600) through a temp file, fsync and rename, only when
// the bytes differ from what is there. It reports whether it wrote.
func WriteConflist(dir, file string, data []byte) (bool, error) {
	return writeConflist(dir, file, data, nil)
}

func writeConflist(dir, file string, data []byte, f fault) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	path := filepath.Join(dir, file)
	if cur, err := os.ReadFile(path); err == nil && bytes.Equal(cur, data) {
		if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() != conflist.ConfMode {
			return false, os.Chmod(path, conflist.ConfMode)
		}
		return false, nil
	}
	removeStaleTemps(dir, staleTempAge, func(string, ...any) {})
	if _, err := writeAtomic(writeSpec{dir: dir, name: file, perm: conflist.ConfMode, src: bytes.NewReader(data), fault: f}); err != nil {
		return false, err
	}
	return true, nil
}

// confExts are the extensions libcni (and so containerd and CRI-O) loads from the conf dir.
var confExts = []string{".conf", ".conflist", ".json"}

// EarlierConfigs lists the network configs in dir that a runtime would pick before ours: it uses
// the first file by name, so while one of these is there, ours is not used.
func EarlierConfigs(dir, ours string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if n >= ours || e.IsDir() {
			continue
		}
		for _, ext := range confExts {
			if filepath.Ext(n) == ext {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// CheckConflist is the readiness check: dir/file exists and is a network config list with plugins.
func CheckConflist(dir, file, network string) error {
	path := filepath.Join(dir, file)
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("not ready: %w", err)
	}
	var cl struct {
		Name    string            `json:"name"`
		Plugins []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &cl); err != nil {
		return fmt.Errorf("not ready: %s is not valid JSON: %w", path, err)
	}
	if cl.Name != network || len(cl.Plugins) == 0 {
		return fmt.Errorf("not ready: %s is not the %q network config (name %q, %d plugins)", path, network, cl.Name, len(cl.Plugins))
	}
	return nil
}
