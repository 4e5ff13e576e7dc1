package installer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/cni-suite/cni-suite/pkg/conflist"
)

// ConfigOptions configures RunConfig.
type ConfigOptions struct {
	ConfDir string             // the runtime's CNI conf dir (/etc/cni/net.d, or /host/etc/cni/net.d in a pod)
	Net     conflist.NetParams // everything but PodCIDRs, which come from PodCIDRs or the Node
	// PodCIDRs given on the command line; when empty they come from the Node object.
	PodCIDRs []string
	Client   kubernetes.Interface // used when PodCIDRs is empty
	NodeName string
	// DetectMTU finds the MTU when Net.MTU is 0 (DefaultRouteMTU in the node's netns); nil: none.
	DetectMTU func() (int, string, error)
	// BinDir, when set, is the CNI bin dir: the config is written only while the plugins it names
	// are there, so a config never points at missing binaries (before install, after uninstall).
	BinDir string
	// DataDirOnHost is Net.DataDir as this process sees it (e.g. under /host); created 0755 when set.
	DataDirOnHost string
	Resync        time.Duration // how often the config is checked again even without a change
	Once          bool          // return once the config is in place
	Logf          func(format string, args ...any)
}

// configWriter renders and writes the config for a set of pod CIDRs, logging changes only.
type configWriter struct {
	o         *ConfigOptions
	file      string
	lastNote  string
	lastEarly string
}

func (w *configWriter) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if msg != w.lastNote {
		w.lastNote = msg
		w.o.Logf("%s", msg)
	}
}

// apply makes the conf dir hold the config for cidrs. It reports whether the config is in place.
func (w *configWriter) apply(cidrs []string) (bool, error) {
	if len(cidrs) == 0 {
		w.note("node %s has no pod CIDR yet (spec.podCIDRs is empty): not writing %s; waiting for one "+
			"(the cluster allocates them when kube-controller-manager runs with --allocate-node-cidrs; or give --pod-cidr)",
			w.o.NodeName, filepath.Join(w.o.ConfDir, w.file))
		return false, nil
	}
	prefixes, err := conflist.ParsePodCIDRs(cidrs)
	if err != nil {
		return false, err
	}
	p := w.o.Net
	p.PodCIDRs = prefixes
	if p.MTU == 0 && w.o.DetectMTU != nil {
		mtu, via, err := w.o.DetectMTU()
		switch {
		case err != nil:
			w.note("cannot read the default route's MTU (%v): leaving mtu out of the config", err)
		case mtu == 0:
			w.note("no default route: leaving mtu out of the config (the bridge plugin's default applies)")
		default:
			p.MTU = mtu
			w.note("mtu %d from the default route's link %s", mtu, via)
		}
	}
	data, err := conflist.Render(p)
	if err != nil {
		return false, err
	}
	if w.o.BinDir != "" {
		var missing []string
		for _, plugin := range conflist.ConfPluginTypes {
			if fi, err := os.Stat(filepath.Join(w.o.BinDir, plugin)); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
				missing = append(missing, plugin)
			}
		}
		if len(missing) > 0 {
			w.note("plugin binaries %s are not in %s: not writing %s until they are (the init container installs them)",
				strings.Join(missing, ", "), w.o.BinDir, filepath.Join(w.o.ConfDir, w.file))
			return false, nil
		}
	}
	if w.o.DataDirOnHost != "" {
		if err := os.MkdirAll(w.o.DataDirOnHost, 0o755); err != nil {
			return false, fmt.Errorf("create IPAM data dir: %w", err)
		}
	}
	wrote, err := WriteConflist(w.o.ConfDir, w.file, data)
	if err != nil {
		return false, err
	}
	strs := make([]string, len(prefixes))
	for i, c := range prefixes {
		strs[i] = c.String()
	}
	if wrote {
		w.lastNote = ""
		w.o.Logf("wrote %s: pod CIDRs %s, mtu %s", filepath.Join(w.o.ConfDir, w.file), strings.Join(strs, ","), mtuString(p.MTU))
	} else {
		w.note("%s is up to date: pod CIDRs %s, mtu %s", filepath.Join(w.o.ConfDir, w.file), strings.Join(strs, ","), mtuString(p.MTU))
	}
	if early, err := EarlierConfigs(w.o.ConfDir, w.file); err == nil {
		if s := strings.Join(early, ", "); s != w.lastEarly {
			w.lastEarly = s
			if s != "" {
				w.o.Logf("WARNING: %s sorts before %s in %s: the runtime uses the first config by name, so ours is NOT in use until that goes", s, w.file, w.o.ConfDir)
			}
		}
	}
	return true, nil
}

func mtuString(m int) string {
	if m == 0 {
		return "default"
	}
	return fmt.Sprint(m)
}

// RunConfig writes the network config list and keeps it right: with PodCIDRs given, it writes
// them; otherwise it waits until the Node has spec.podCIDRs and re-renders whenever they change.
// Either way it checks the file again every Resync (putting back a deleted or edited one). It
// returns when ctx ends, or, with Once, as soon as the config is in place.
func RunConfig(ctx context.Context, o ConfigOptions) error {
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if o.Resync <= 0 {
		o.Resync = 5 * time.Minute
	}
	name := o.Net.Name
	if name == "" {
		name = conflist.DefaultNetworkName
	}
	w := &configWriter{o: &o, file: conflist.ConfFileName(name)}
	const retry = 5 * time.Second

	if len(o.PodCIDRs) > 0 {
		prefixes, err := conflist.ParsePodCIDRs(o.PodCIDRs)
		if err != nil {
			return err
		}
		// A trial render, so that bad flags fail now rather than in the loop.
		trial := o.Net
		trial.PodCIDRs = prefixes
		if _, err := conflist.Render(trial); err != nil {
			return err
		}
		for {
			ok, err := w.apply(o.PodCIDRs)
			if err != nil {
				o.Logf("writing config failed, will retry: %v", err)
			}
			if ok && o.Once {
				return nil
			}
			wait := o.Resync
			if err != nil {
				wait = retry
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
	}

	if o.Client == nil {
		return errors.New("no pod CIDRs given and no API client")
	}
	o.Logf("waiting for Node %s's pod CIDRs (spec.podCIDRs)", o.NodeName)
	latest := make(chan []string, 1)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	werr := make(chan error, 1)
	go func() {
		werr <- WatchNodeCIDRs(wctx, o.Client, o.NodeName, o.Resync, func(c []string) {
			select { // keep only the newest
			case <-latest:
			default:
			}
			latest <- c
		})
	}()
	var cur []string
	var retryC <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			stop()
			<-werr
			return nil
		case err := <-werr:
			return err
		case cur = <-latest:
		case <-retryC:
		}
		retryC = nil
		ok, err := w.apply(cur)
		if err != nil {
			o.Logf("writing config for node %s failed, will retry: %v", o.NodeName, err)
			retryC = time.After(retry)
			continue
		}
		if ok && o.Once {
			stop()
			<-werr
			return nil
		}
	}
}
