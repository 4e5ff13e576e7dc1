package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// UninstallOptions configures Uninstall.
type UninstallOptions struct {
	Dst      string // the CNI bin dir InstallBins wrote to
	ConfDir  string // the CNI conf dir
	ConfName string // our conflist's file name (conflist.ConfFileName of the network name)
	Logf     func(format string, args ...any)

	fault fault
}

func (o *UninstallOptions) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// Uninstall takes the suite off the node: first our conflist (so the runtime stops starting pods
// on our network before the binaries go), then every binary InstallBins wrote, putting back the
// file it had replaced, if any. A binary that changed since (someone else's now) is left alone;
// so is every other file in either directory. It can be run again after a failure.
func Uninstall(o UninstallOptions) error {
	if o.ConfDir != "" && o.ConfName != "" {
		removed, err := removeDurable(o.ConfDir, o.ConfName)
		if err != nil {
			return err
		}
		if removed {
			o.logf("removed %s", filepath.Join(o.ConfDir, o.ConfName))
		} else {
			o.logf("%s: not there", filepath.Join(o.ConfDir, o.ConfName))
		}
		removeStaleTemps(o.ConfDir, staleTempAge, o.logf)
	}
	if o.Dst == "" {
		return nil
	}
	s, err := openStore(o.Dst, false, o.fault)
	if err != nil {
		return err
	}
	if s == nil {
		o.logf("no install record in %s: no binaries to remove", filepath.Join(o.Dst, StateDirName))
		return nil
	}
	defer s.close()
	removeStaleTemps(o.Dst, 0, o.logf)
	st, err := s.load()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(st.Binaries))
	for n := range st.Binaries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := ValidPluginName(name); err != nil {
			return fmt.Errorf("install record: %w", err)
		}
		if err := uninstallOne(&o, s, name, st.Binaries[name]); err != nil {
			return fmt.Errorf("uninstall %s: %w", name, err)
		}
		delete(st.Binaries, name)
		if err := s.save(st); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("remove %s: %w", s.dir, err)
	}
	return syncDir(o.Dst)
}

func uninstallOne(o *UninstallOptions, s *store, name string, rec *record) error {
	path := filepath.Join(o.Dst, name)
	li, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		o.logf("%s: already gone, leaving it so", path)
		return nil
	}
	if err != nil {
		return err
	}
	cur := ""
	if li.Mode().IsRegular() {
		cur, _ = fileSHA256(path)
	}
	switch {
	case !rec.ours(cur):
		o.logf("%s changed since install-cni wrote it: leaving it", path)
	case rec.Backup != nil:
		if err := restoreBackup(s, o.Dst, name, rec.Backup); err != nil {
			return err
		}
		o.logf("restored %s as it was before install", path)
	default:
		if _, err := removeDurable(o.Dst, name); err != nil {
			return err
		}
		o.logf("removed %s", path)
	}
	return nil
}
