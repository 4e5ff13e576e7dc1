// Command loopback is the CNI loopback plugin.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/buildinfo"
	"github.com/cni-suite/cni-suite/pkg/loopback"
)

func main() {
	skel.PluginMainFuncs(loopback.Funcs, version.All, buildinfo.About("loopback"))
}
