// Command host-local is the CNI host-local IPAM plugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/buildinfo"
	"github.com/cni-suite/cni-suite/pkg/hostlocal"
)

func main() {
	skel.PluginMainFuncs(hostlocal.Funcs, version.All, buildinfo.About("host-local"))
}
