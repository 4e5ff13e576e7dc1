// Package buildinfo holds the version stamped into every binary at build time.
package buildinfo

import "fmt"

// Version is set by the Makefile with -ldflags "-X .../pkg/buildinfo.Version=$(git describe)".
var Version = "dev"

// About is the string pkg/skel prints on stderr when CNI_COMMAND is unset.
func About(plugin string) string {
	return fmt.Sprintf("CNI %s plugin (cni-suite) %s", plugin, Version)
}
