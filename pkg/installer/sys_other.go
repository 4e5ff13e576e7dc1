//go:build !linux

package installer

import (
	"io/fs"
	"os"
)

func lockExclusive(*os.File) error { return nil }

func owner(fs.FileInfo) (uid, gid int) { return os.Getuid(), os.Getgid() }

func isTextBusy(error) bool { return false }
