// Command portmap is the CNI portmap plugin: hostPort mappings for a container, chained after
// the plugin that made its interface.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/buildinfo"
	"github.com/cni-suite/cni-suite/pkg/portmap"
)

func main() {
	skel.PluginMainFuncs(portmap.Funcs, version.All, buildinfo.About("portmap"))
}
