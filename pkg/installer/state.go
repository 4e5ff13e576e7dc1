package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// StateDirName is the directory inside the CNI bin dir where the installer keeps what it needs to
// undo itself: which binaries it wrote (by content hash) and a backup of every different file it
// replaced. A runtime only runs plugins by type name, so it never looks there.
const StateDirName = ".cni-suite-install"

const (
	stateFile = "state.json"
	lockFile  = "lock"
	backupDir = "backup"
	// maxHashes bounds how many installed versions of one binary are remembered as ours.
	maxHashes = 8
)

// state is the installer's record, stored as JSON in <bin dir>/.cni-suite-install/state.json.
type state struct {
	Binaries map[string]*record `json:"binaries"`
}

// record is one binary the installer wrote.
type record struct {
	// Installed holds the SHA-256 of every version the installer put there, newest last: a file
	// whose content is one of them is ours, anything else is someone else's and is left alone.
	Installed []string `json:"installed"`
	// Backup is what was there before the first install, when it was a different file.
	Backup *backup `json:"backup,omitempty"`
}

func (r *record) ours(sum string) bool { return sum != "" && slices.Contains(r.Installed, sum) }

func (r *record) add(sum string) {
	if r.ours(sum) {
		return
	}
	r.Installed = append(r.Installed, sum)
	if len(r.Installed) > maxHashes {
		r.Installed = r.Installed[len(r.Installed)-maxHashes:]
	}
}

// backup describes a replaced file; a regular file's bytes are in backup/<name>.
type backup struct {
	Symlink string      `json:"symlink,omitempty"` // target, when the original was a symlink
	SHA256  string      `json:"sha256,omitempty"`  // content of the backed-up regular file
	Mode    fs.FileMode `json:"mode"`
	UID     int         `json:"uid"`
	GID     int         `json:"gid"`
	ModTime time.Time   `json:"mtime"`
}

// store is the state directory of one bin dir, locked while in use.
type store struct {
	dir   string
	lock  *os.File
	fault fault
}

// openStore creates (when create is set) and locks the state directory of binDir. It returns
// nil, nil when the directory does not exist and create is false.
func openStore(binDir string, create bool, f fault) (*store, error) {
	dir := filepath.Join(binDir, StateDirName)
	if create {
		if err := os.MkdirAll(filepath.Join(dir, backupDir), 0o700); err != nil {
			return nil, fmt.Errorf("create state dir: %w", err)
		}
	} else if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	l, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := lockExclusive(l); err != nil {
		l.Close()
		return nil, fmt.Errorf("lock %s: %w", l.Name(), err)
	}
	return &store{dir: dir, lock: l, fault: f}, nil
}

func (s *store) close() {
	if s != nil && s.lock != nil {
		s.lock.Close() // releases the flock
	}
}

func (s *store) load() (*state, error) {
	st := &state{Binaries: map[string]*record{}}
	b, err := os.ReadFile(filepath.Join(s.dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read install record: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("parse install record %s: %w", filepath.Join(s.dir, stateFile), err)
	}
	if st.Binaries == nil {
		st.Binaries = map[string]*record{}
	}
	return st, nil
}

func (s *store) save(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	_, err = writeAtomic(writeSpec{dir: s.dir, name: stateFile, perm: 0o600, src: bytes.NewReader(append(b, '\n')), fault: s.fault})
	if err != nil {
		return fmt.Errorf("save install record: %w", err)
	}
	return nil
}

func (s *store) backupPath(name string) string { return filepath.Join(s.dir, backupDir, name) }
