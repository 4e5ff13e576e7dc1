// Command bridge is the CNI bridge plugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/bridge"
	"github.com/cni-suite/cni-suite/pkg/buildinfo"
)

func main() {
	skel.PluginMainFuncs(bridge.Funcs, version.All, buildinfo.About("bridge"))
}
