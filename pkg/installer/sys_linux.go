package installer

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

func lockExclusive(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

// owner returns a file's uid and gid.
func owner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return os.Getuid(), os.Getgid()
}

func isTextBusy(err error) bool {
	return errors.Is(err, syscall.ETXTBSY)
}
