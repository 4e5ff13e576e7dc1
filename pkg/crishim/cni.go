package crishim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podIfName is the pod's interface name, as every Kubernetes runtime uses.
const podIfName = "eth0"

// loopbackConf brings lo up in each new pod netns, as containerd does, through the loopback
// plugin found on the plugin path.
const loopbackConf = `{"cniVersion":"1.0.0","name":"cni-loopback","plugins":[{"type":"loopback"}]}`

// cniNet finds the network config and runs the CNI verbs through libcni.
type cniNet struct {
	confDir string
	cni     *libcni.CNIConfig
	lo      *libcni.NetworkConfigList

	mu    sync.Mutex
	print string // fingerprint of the conf dir at the last load
	net   *libcni.NetworkConfigList
	file  string
	err   error
}

func newCNINet(confDir string, binDirs []string, cacheDir string) (*cniNet, error) {
	lo, err := libcni.NetworkConfFromBytes([]byte(loopbackConf))
	if err != nil {
		return nil, err
	}
	return &cniNet{
		confDir: confDir,
		cni:     libcni.NewCNIConfigWithCacheDir(binDirs, cacheDir, pluginExec{}),
		lo:      lo,
	}, nil
}

var confExts = []string{".conf", ".conflist", ".json"}

// fingerprint names the config files with their size and modification time: a change of any
// of them (or of the set) triggers a reload.
func (c *cniNet) fingerprint() string {
	ents, err := os.ReadDir(c.confDir)
	if err != nil {
		return "error:" + err.Error()
	}
	var b strings.Builder
	for _, e := range ents {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || !containsStr(confExts, ext) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d;", e.Name(), info.Size(), info.ModTime().UnixNano())
	}
	return b.String()
}

// network returns the network config in use: the first file of the conf dir by name, as
// containerd picks it. A first file that is invalid makes the network not ready (it is not
// skipped), so a broken config is seen rather than silently replaced by the next one.
func (c *cniNet) network() (*libcni.NetworkConfigList, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	fp := c.fingerprint()
	if fp == c.print && (c.net != nil || c.err != nil) {
		return c.net, c.file, c.err
	}
	c.print = fp
	c.net, c.file, c.err = loadFirstConf(c.confDir)
	return c.net, c.file, c.err
}

func loadFirstConf(dir string) (*libcni.NetworkConfigList, string, error) {
	files, err := libcni.ConfFiles(dir, confExts)
	if err != nil {
		return nil, "", fmt.Errorf("read CNI config dir %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, "", fmt.Errorf("no network config found in %s", dir)
	}
	sort.Strings(files)
	file := files[0]
	var list *libcni.NetworkConfigList
	if strings.HasSuffix(file, ".conflist") {
		list, err = libcni.NetworkConfFromFile(file)
	} else {
		var conf *libcni.PluginConfig
		conf, err = libcni.ConfFromFile(file)
		if err == nil {
			if conf.Network.Type == "" {
				return nil, file, fmt.Errorf("CNI config %s: no plugin type", file)
			}
			list, err = libcni.ConfListFromConf(conf)
		}
	}
	if err != nil {
		return nil, file, fmt.Errorf("CNI config %s: %w", file, err)
	}
	if len(list.Plugins) == 0 {
		return nil, file, fmt.Errorf("CNI config %s: no plugins", file)
	}
	for i, p := range list.Plugins {
		if p.Network.Type == "" {
			return nil, file, fmt.Errorf("CNI config %s: plugin %d has no type", file, i)
		}
	}
	return list, file, nil
}

// status runs the network's CNI STATUS (a no-op for config versions before 1.1.0).
func (c *cniNet) status(ctx context.Context) error {
	list, file, err := c.network()
	if err != nil {
		return err
	}
	if err := c.cni.GetStatusNetworkList(ctx, list); err != nil {
		return fmt.Errorf("CNI STATUS of network %q (%s): %w", list.Name, filepath.Base(file), err)
	}
	return nil
}

// podNetwork is what a pod's ADD/DEL needs.
type podNetwork struct {
	id, netns string
	config    *runtimeapi.PodSandboxConfig
}

func (p podNetwork) runtimeConf(ifName string) *libcni.RuntimeConf {
	md := p.config.GetMetadata()
	rt := &libcni.RuntimeConf{
		ContainerID: p.id,
		NetNS:       p.netns,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", md.GetNamespace()},
			{"K8S_POD_NAME", md.GetName()},
			{"K8S_POD_INFRA_CONTAINER_ID", p.id},
			{"K8S_POD_UID", md.GetUid()},
		},
		CapabilityArgs: map[string]any{},
	}
	var pms []map[string]any
	for _, pm := range p.config.GetPortMappings() {
		if pm.GetHostPort() <= 0 {
			continue // kubelet sends container ports without a host port too
		}
		m := map[string]any{
			"hostPort":      pm.GetHostPort(),
			"containerPort": pm.GetContainerPort(),
			"protocol":      strings.ToLower(pm.GetProtocol().String()),
		}
		if pm.GetHostIp() != "" {
			m["hostIP"] = pm.GetHostIp()
		}
		pms = append(pms, m)
	}
	if len(pms) > 0 {
		rt.CapabilityArgs["portMappings"] = pms
	}
	if d := p.config.GetDnsConfig(); d != nil {
		rt.CapabilityArgs["dns"] = map[string]any{
			"servers": nonNil(d.GetServers()), "searches": nonNil(d.GetSearches()), "options": nonNil(d.GetOptions()),
		}
	}
	if a := p.config.GetAnnotations(); len(a) > 0 {
		rt.CapabilityArgs["io.kubernetes.cri.pod-annotations"] = a
	}
	return rt
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// add brings lo up and attaches the pod to the network. The result is returned in the
// current CNI version's shape.
func (c *cniNet) add(ctx context.Context, list *libcni.NetworkConfigList, p podNetwork) (*current.Result, error) {
	if _, err := c.cni.AddNetworkList(ctx, c.lo, p.runtimeConf("lo")); err != nil {
		return nil, fmt.Errorf("loopback ADD: %w", err)
	}
	res, err := c.cni.AddNetworkList(ctx, list, p.runtimeConf(podIfName))
	if err != nil {
		return nil, fmt.Errorf("CNI ADD on network %q: %w", list.Name, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("CNI ADD on network %q: convert result: %w", list.Name, err)
	}
	return cur, nil
}

// del detaches the pod; it is safe to repeat and works when the netns is gone.
func (c *cniNet) del(ctx context.Context, list *libcni.NetworkConfigList, p podNetwork) error {
	var errs []error
	if err := c.cni.DelNetworkList(ctx, list, p.runtimeConf(podIfName)); err != nil {
		errs = append(errs, fmt.Errorf("CNI DEL on network %q: %w", list.Name, err))
	}
	if err := c.cni.DelNetworkList(ctx, c.lo, p.runtimeConf("lo")); err != nil {
		errs = append(errs, fmt.Errorf("loopback DEL: %w", err))
	}
	return errors.Join(errs...)
}

// gc tells the network which attachments are still in use (CNI 1.1 GC); everything else the
// plugins (and libcni's cache) hold is released.
func (c *cniNet) gc(ctx context.Context, list *libcni.NetworkConfigList, valid []string) error {
	args := &libcni.GCArgs{}
	for _, id := range valid {
		args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: id, IfName: podIfName})
	}
	return c.cni.GCNetworkList(ctx, list, args)
}

// podIPs orders a result's addresses as Kubernetes wants them: the first IPv4 one first, then
// the others (IPv6 first among them).
func podIPs(res *current.Result) []string {
	var v4, v6 []string
	for _, ip := range res.IPs {
		if ip.Address.IP == nil {
			continue
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	if len(v4) == 0 {
		return v6
	}
	out := make([]string, 0, len(v4)+len(v6))
	out = append(out, v4[0])
	out = append(out, v6...)
	return append(out, v4[1:]...)
}

func listFromBytes(b []byte) (*libcni.NetworkConfigList, error) {
	return libcni.NetworkConfFromBytes(b)
}

func resultJSON(res *current.Result) json.RawMessage {
	b, _ := json.Marshal(res)
	return b
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// pluginExec runs plugin binaries as libcni's own executor does, except that a plugin dies
// with the shim: a shim killed during ADD must not see that ADD complete behind the DEL that
// undoes it at the next start.
type pluginExec struct{}

func (pluginExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := startOnStableThread(cmd)
	if err == nil {
		err = cmd.Wait()
	}
	if err != nil {
		e := &types.Error{}
		switch {
		case stdout.Len() > 0:
			if jerr := json.Unmarshal(stdout.Bytes(), e); jerr != nil {
				e.Msg = fmt.Sprintf("plugin %s failed and its error %q is not JSON: %v", filepath.Base(path), stdout.String(), jerr)
			}
		case stderr.Len() > 0:
			e.Msg = fmt.Sprintf("plugin %s failed: %q: %v", filepath.Base(path), stderr.String(), err)
		default:
			e.Msg = fmt.Sprintf("plugin %s failed with no error message: %v", filepath.Base(path), err)
		}
		return nil, e
	}
	return stdout.Bytes(), nil
}

func (pluginExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (pluginExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// The parent death signal fires when the thread that forked the child ends, not the process.
// The shim throws threads away after moving them into pod namespaces, and such a thread may
// have forked a plugin before: plugins are therefore forked from one thread that never ends.
var (
	launcherOnce sync.Once
	launches     = make(chan launch)
)

type launch struct {
	cmd *exec.Cmd
	err chan error
}

func startOnStableThread(cmd *exec.Cmd) error {
	launcherOnce.Do(func() {
		go func() {
			runtime.LockOSThread() // never unlocked, and this goroutine never returns
			for l := range launches {
				l.err <- l.cmd.Start()
			}
		}()
	})
	l := launch{cmd: cmd, err: make(chan error, 1)}
	launches <- l
	return <-l.err
}
