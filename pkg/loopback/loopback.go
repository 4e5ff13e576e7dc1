// Package loopback is the loopback plugin: it brings `lo` up in the pod network namespace.
package loopback

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/cnierr"
	"github.com/cni-suite/cni-suite/pkg/link"
)

const ifName = "lo"

// Funcs are the plugin's verbs, for skel.PluginMainFuncs.
var Funcs = skel.CNIFuncs{Add: Add, Del: Del, Check: Check, GC: GC, Status: Status}

func parseConf(stdin []byte) (*types.NetConf, error) {
	conf := &types.NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, cnierr.Decoding(fmt.Errorf("parse network config: %w", err))
	}
	if conf.RawPrevResult != nil {
		if err := version.ParsePrevResult(conf); err != nil {
			return nil, cnierr.Decoding(fmt.Errorf("parse prevResult: %w", err))
		}
	}
	return conf, nil
}

// Add brings lo up and prints the result: the prevResult untouched when chained, else lo and its addresses.
func Add(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	addrs, err := up(args.Netns)
	if err != nil {
		return link.InvalidNetNS(args.Netns, err)
	}
	if conf.PrevResult != nil {
		return types.PrintResult(conf.PrevResult, conf.CNIVersion)
	}
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: ifName, Mac: "00:00:00:00:00:00", Sandbox: args.Netns}},
	}
	for _, a := range addrs {
		r.IPs = append(r.IPs, &current.IPConfig{Interface: current.Int(0), Address: a})
	}
	return types.PrintResult(r, conf.CNIVersion)
}

// Del brings lo down; it succeeds when the netns is already gone.
func Del(args *skel.CmdArgs) error {
	if _, err := parseConf(args.StdinData); err != nil {
		return err
	}
	if args.Netns == "" {
		return nil
	}
	return down(args.Netns)
}

// Check verifies that lo is up and holds only loopback addresses.
func Check(args *skel.CmdArgs) error {
	if _, err := parseConf(args.StdinData); err != nil {
		return err
	}
	return link.InvalidNetNS(args.Netns, check(args.Netns))
}

// GC has nothing to collect: lo lives and dies with its netns.
func GC(args *skel.CmdArgs) error {
	_, err := parseConf(args.StdinData)
	return err
}

// Status: loopback can always work.
func Status(args *skel.CmdArgs) error {
	_, err := parseConf(args.StdinData)
	return err
}
