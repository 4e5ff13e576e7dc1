package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// Runtime drives one conflist through libcni the way containerd does: plugins found on
// the plugin dir, results cached in a cache dir (so CHECK and DEL get prevResult), the
// kubelet's CNI_ARGS and the portMappings capability, every call made from a thread inside
// the node netns (so the plugins, and whatever they execute, run there).
type Runtime struct {
	CNI    *libcni.CNIConfig
	List   *libcni.NetworkConfigList
	Node   string // node netns path
	IfName string
}

// NewRuntime loads the conflist for the plugin dir. exec may be nil (libcni's default).
func NewRuntime(pluginDir, cacheDir, nodePath string, conflist []byte, exec invoke.Exec) (*Runtime, error) {
	list, err := libcni.NetworkConfFromBytes(conflist)
	if err != nil {
		return nil, fmt.Errorf("load conflist: %w", err)
	}
	if exec == nil {
		exec = &invoke.DefaultExec{RawExec: &invoke.RawExec{}, PluginDecoder: version.PluginDecoder{}}
	}
	return &Runtime{
		CNI:    libcni.NewCNIConfigWithCacheDir([]string{pluginDir}, cacheDir, exec),
		List:   list,
		Node:   nodePath,
		IfName: "eth0",
	}, nil
}

// RuntimeConf is what containerd passes for the pod.
func (r *Runtime) RuntimeConf(p Pod) *libcni.RuntimeConf {
	ports := make([]any, len(p.Ports))
	for i, m := range p.Ports {
		ports[i] = m
	}
	return &libcni.RuntimeConf{
		ContainerID: p.ID,
		NetNS:       p.NetNS,
		IfName:      r.IfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "bench"},
			{"K8S_POD_NAME", fmt.Sprintf("pod-%d", p.Index)},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ID},
			{"K8S_POD_UID", "uid-" + p.ID},
		},
		CapabilityArgs: map[string]any{"portMappings": ports},
	}
}

// Add runs ADD for the whole list and returns the result in the current version.
func (r *Runtime) Add(ctx context.Context, p Pod) (*current.Result, error) {
	var res types.Result
	err := InNS(r.Node, func() error {
		var err error
		res, err = r.CNI.AddNetworkList(ctx, r.List, r.RuntimeConf(p))
		return err
	})
	if err != nil {
		return nil, err
	}
	return current.NewResultFromResult(res)
}

// Check runs CHECK with the cached result.
func (r *Runtime) Check(ctx context.Context, p Pod) error {
	return InNS(r.Node, func() error { return r.CNI.CheckNetworkList(ctx, r.List, r.RuntimeConf(p)) })
}

// Del runs DEL with the cached result, when there is one.
func (r *Runtime) Del(ctx context.Context, p Pod) error {
	return InNS(r.Node, func() error { return r.CNI.DelNetworkList(ctx, r.List, r.RuntimeConf(p)) })
}

// GC runs libcni's GC: DEL of cached attachments not in keep, then GC of every plugin
// with cni.dev/valid-attachments = keep.
func (r *Runtime) GC(ctx context.Context, keep []Pod) error {
	valid := make([]types.GCAttachment, len(keep))
	for i, p := range keep {
		valid[i] = types.GCAttachment{ContainerID: p.ID, IfName: r.IfName}
	}
	return InNS(r.Node, func() error {
		return r.CNI.GCNetworkList(ctx, r.List, &libcni.GCArgs{ValidAttachments: valid})
	})
}

// PodIPv4 is the first IPv4 address of a result, "" when none.
func PodIPv4(res *current.Result) string {
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() != nil {
			return ip.Address.IP.String()
		}
	}
	return ""
}

// HasPlugins reports which of the named plugin binaries dir lacks.
func HasPlugins(dir string, names ...string) (missing []string) {
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, n)
		}
	}
	return missing
}

// ErrorCode is the CNI error code of err (0 when it is not a CNI error).
func ErrorCode(err error) uint {
	var te *types.Error
	if !errors.As(err, &te) {
		return 0
	}
	return te.Code
}
