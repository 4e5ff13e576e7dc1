package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The few API fields the checks read (JSON from the apiserver; no client-go dependency).
type condition struct {
	Type    string `json:"type"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type nodeObj struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		PodCIDR  string   `json:"podCIDR"`
		PodCIDRs []string `json:"podCIDRs"`
	} `json:"spec"`
	Status struct {
		Conditions []condition `json:"conditions"`
	} `json:"status"`
}

// Ready returns the node's Ready condition ("" when absent).
func (n *nodeObj) Ready() condition {
	for _, c := range n.Status.Conditions {
		if c.Type == "Ready" {
			return c
		}
	}
	return condition{}
}

type podObj struct {
	Metadata struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		UID               string            `json:"uid"`
		Labels            map[string]string `json:"labels"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		NodeName    string `json:"nodeName"`
		HostNetwork bool   `json:"hostNetwork"`
	} `json:"spec"`
	Status struct {
		Phase      string      `json:"phase"`
		PodIP      string      `json:"podIP"`
		Conditions []condition `json:"conditions"`
	} `json:"status"`
}

func (p *podObj) Ready() bool {
	for _, c := range p.Status.Conditions {
		if c.Type == "Ready" {
			return c.Status == "True"
		}
	}
	return false
}

type podList struct {
	Items []podObj `json:"items"`
}

// Node reads the node object.
func (c *Cluster) NodeObj(ctx context.Context) (*nodeObj, error) {
	var n nodeObj
	if err := c.GetJSON(ctx, "/api/v1/nodes/"+nodeName, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// Pods lists the pods of a namespace matching a label selector ("app=x").
func (c *Cluster) Pods(ctx context.Context, ns, selector string) ([]podObj, error) {
	var l podList
	if err := c.GetJSON(ctx, fmt.Sprintf("/api/v1/namespaces/%s/pods?labelSelector=%s", ns, url.QueryEscape(selector)), &l); err != nil {
		return nil, err
	}
	sort.Slice(l.Items, func(i, j int) bool { return l.Items[i].Metadata.Name < l.Items[j].Metadata.Name })
	return l.Items, nil
}

// WaitNodeReady waits until the node's Ready condition has the wanted status.
func (c *Cluster) WaitNodeReady(ctx context.Context, want string, timeout time.Duration) (condition, error) {
	var last condition
	err := waitFor(ctx, timeout, 250*time.Millisecond, "node Ready="+want, func() (bool, error) {
		if err := c.alive("kubelet"); err != nil {
			return false, err
		}
		n, err := c.NodeObj(ctx)
		if err != nil {
			return false, err
		}
		last = n.Ready()
		return last.Status == want, fmt.Errorf("Ready=%s (%s: %s)", last.Status, last.Reason, last.Message)
	})
	return last, err
}

// cniCacheEntry is libcni's cached result of an ADD (<cacheDir>/results/<net>-<cid>-<if>).
type cniCacheEntry struct {
	File        string
	ContainerID string     `json:"containerId"`
	IfName      string     `json:"ifName"`
	NetworkName string     `json:"networkName"`
	CniArgs     [][]string `json:"cniArgs"`
	Result      struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	} `json:"result"`
}

func (e *cniCacheEntry) Arg(k string) string {
	for _, kv := range e.CniArgs {
		if len(kv) == 2 && kv[0] == k {
			return kv[1]
		}
	}
	return ""
}

// IPs returns the result's addresses without prefix length.
func (e *cniCacheEntry) IPs() []string {
	var out []string
	for _, ip := range e.Result.IPs {
		if a, _, err := net.ParseCIDR(ip.Address); err == nil {
			out = append(out, a.String())
		}
	}
	return out
}

// CNICache reads every cached CNI result of the node's runtime (<cache dir>/results).
func (c *Cluster) CNICache() ([]cniCacheEntry, error) {
	dir := c.Path(filepath.Join(c.CNICacheDir, "results"))
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []cniCacheEntry
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		var ce cniCacheEntry
		if err := json.Unmarshal(b, &ce); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		ce.File = e.Name()
		out = append(out, ce)
	}
	return out, nil
}

// conflistInfo is what the checks need from the node's CNI config.
type conflistInfo struct {
	Name    string
	DataDir string
}

// ReadConflist parses the first config in the node's /etc/cni/net.d (by name, as runtimes pick).
func (c *Cluster) ReadConflist() (conflistInfo, error) {
	dir := c.Path("/etc/cni/net.d")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return conflistInfo{}, err
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".conflist") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return conflistInfo{}, err
		}
		var cl struct {
			Name    string `json:"name"`
			Plugins []struct {
				Type string `json:"type"`
				IPAM struct {
					Type    string `json:"type"`
					DataDir string `json:"dataDir"`
				} `json:"ipam"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal(b, &cl); err != nil {
			return conflistInfo{}, fmt.Errorf("%s: %w", e.Name(), err)
		}
		info := conflistInfo{Name: cl.Name, DataDir: "/var/lib/cni/networks"}
		for _, p := range cl.Plugins {
			if p.IPAM.Type == "host-local" && p.IPAM.DataDir != "" {
				info.DataDir = p.IPAM.DataDir
			}
		}
		return info, nil
	}
	return conflistInfo{}, fmt.Errorf("no .conflist in /etc/cni/net.d")
}

// Reservations lists host-local's reservation files (IPs) of a network in the node.
func (c *Cluster) Reservations(info conflistInfo) ([]string, error) {
	ents, err := os.ReadDir(c.Path(filepath.Join(info.DataDir, info.Name)))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); n != "lock" && !strings.HasPrefix(n, "last_reserved_ip") && net.ParseIP(n) != nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Veths lists the veth links of the node netns other than its uplink.
func (c *Cluster) Veths(ctx context.Context) ([]string, error) {
	out, err := c.Exec(ctx, 10*time.Second, "ip", "-o", "link", "show", "type", "veth")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, l := range splitLines(out) {
		f := strings.Fields(l)
		if len(f) > 1 {
			name := strings.TrimSuffix(f[1], ":")
			if i := strings.IndexByte(name, '@'); i >= 0 {
				name = name[:i]
			}
			if name != "eth0" {
				names = append(names, name)
			}
		}
	}
	return names, nil
}

// Netfilter returns the node netns's iptables, ip6tables and nftables rules as text.
func (c *Cluster) Netfilter(ctx context.Context) (string, error) {
	var b strings.Builder
	for _, argv := range [][]string{{"iptables-save"}, {"ip6tables-save"}, {"nft", "list", "ruleset"}} {
		out, err := c.Exec(ctx, 15*time.Second, argv...)
		if err != nil {
			return "", err
		}
		b.WriteString(out)
	}
	return b.String(), nil
}
