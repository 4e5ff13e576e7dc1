// Command install-cni is the DaemonSet installer: it puts the suite's plugin binaries and network
// config on a node and takes them away again (see pkg/installer).
package main

import "github.com/cni-suite/cni-suite/pkg/installer"

func main() { installer.RunMain() }
