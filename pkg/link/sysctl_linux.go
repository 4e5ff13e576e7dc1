package link

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteSysctl sets /proc/sys/<name> (name uses "/" separators, so "net/ipv4/conf/eth0.5/x"
// works) in the netns of the calling thread. Run it through Handle.Do for another netns.
func WriteSysctl(name, value string) error {
	p := filepath.Join("/proc/sys", name)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", name, value, err)
	}
	return nil
}

// IsNotExist reports whether a sysctl error means the key does not exist (IPv6 disabled, …).
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// ensureSysctlOne writes "1" unless the value already is "1" (one read on the usual path).
func ensureSysctlOne(name string) error {
	if b, err := os.ReadFile(filepath.Join("/proc/sys", name)); err == nil && bytes.Equal(bytes.TrimSpace(b), []byte("1")) {
		return nil
	}
	return WriteSysctl(name, "1")
}

// EnableForwarding turns on IPv4 and/or IPv6 forwarding in the calling thread's netns.
func EnableForwarding(v4, v6 bool) error {
	if v4 {
		if err := ensureSysctlOne("net/ipv4/ip_forward"); err != nil {
			return err
		}
	}
	if v6 {
		if err := ensureSysctlOne("net/ipv6/conf/all/forwarding"); err != nil {
			return err
		}
	}
	return nil
}

// disableIPv6 turns IPv6 off on a link (no addresses, no link-local DAD, MLD or router
// solicitations); a kernel without IPv6 needs nothing.
func disableIPv6(name string) error {
	if err := WriteSysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil && !IsNotExist(err) {
		return err
	}
	return nil
}

// ensureIPv6 turns IPv6 back on for a link when it is off (one read on the usual path).
func ensureIPv6(name string) error {
	p := "net/ipv6/conf/" + name + "/disable_ipv6"
	b, err := os.ReadFile(filepath.Join("/proc/sys", p))
	if err != nil || !bytes.Equal(bytes.TrimSpace(b), []byte("1")) {
		return nil // absent (no IPv6 in the kernel) or on
	}
	return WriteSysctl(p, "0")
}
