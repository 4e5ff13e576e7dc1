//go:build !linux

package installer

// DefaultRouteMTU is Linux-only; elsewhere there is no default route to read.
func DefaultRouteMTU(any) (int, string, error) { return 0, "", nil }
