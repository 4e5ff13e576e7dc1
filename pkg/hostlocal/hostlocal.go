// Package hostlocal is the host-local IPAM plugin: it hands out addresses from range sets,
// keeping its reservations as files under a data dir, in the reference plugin's format.
// Each verb is a plain Go function; Funcs wires them to skel for the binary.
package hostlocal

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/cnierr"
	"github.com/cni-suite/cni-suite/pkg/ipalloc"
)

// Logf receives diagnostics (full range sets, index rebuilds); the binary's go to stderr.
var Logf = func(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "host-local: "+format+"\n", a...)
}

// Funcs are the plugin's verbs, for skel.PluginMainFuncs.
var Funcs = skel.CNIFuncs{
	Add: func(args *skel.CmdArgs) error {
		r, err := Add(context.Background(), args)
		if err != nil {
			return err
		}
		return r.Print()
	},
	Del:    func(args *skel.CmdArgs) error { return Del(context.Background(), args) },
	Check:  func(args *skel.CmdArgs) error { return Check(context.Background(), args) },
	GC:     func(args *skel.CmdArgs) error { return GC(context.Background(), args) },
	Status: func(args *skel.CmdArgs) error { return Status(context.Background(), args) },
}

func store(c *Config) *ipalloc.Store {
	return ipalloc.New(c.DataDir, c.Name, ipalloc.Options{Logf: Logf})
}

// storeError turns an allocator error into a CNI error.
func storeError(err error) error {
	var te *types.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &te):
		return te
	case errors.Is(err, ipalloc.ErrLockTimeout):
		return cnierr.TryAgain(err)
	}
	return types.NewError(types.ErrInternal, err.Error(), "")
}

// Add reserves one address per range set for (ContainerID, IfName) and returns the IPAM
// result in the config's cniVersion: addresses with their gateways, routes, dns.
func Add(ctx context.Context, args *skel.CmdArgs) (types.Result, error) {
	c, err := LoadConfig(args.StdinData, args.Args)
	if err != nil {
		return nil, err
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: c.Routes}
	if c.ResolvConf != "" {
		dns, err := parseResolvConf(c.ResolvConf)
		if err != nil {
			return nil, cnierr.InvalidConfig("ipam.resolvConf", "%v", err)
		}
		res.DNS = *dns
	}
	leases, err := store(c).Allocate(ctx, ipalloc.Request{
		ContainerID: args.ContainerID, IfName: args.IfName, Sets: c.Sets, Requested: c.Requested,
	})
	if err != nil {
		return nil, storeError(fmt.Errorf("host-local: allocate for network %q: %w", c.Name, err))
	}
	for _, l := range leases {
		ip := net.IP(l.IP.AsSlice())
		res.IPs = append(res.IPs, &current.IPConfig{
			Address: net.IPNet{IP: ip, Mask: net.CIDRMask(l.Range.Subnet.Bits(), l.IP.BitLen())},
			Gateway: net.IP(l.Range.Gateway.AsSlice()),
		})
	}
	out, err := res.GetAsVersion(c.CNIVersion)
	if err != nil {
		// Cannot happen for a config that passed LoadConfig; do not keep the addresses.
		_, _ = store(c).Release(ctx, args.ContainerID, args.IfName)
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, err.Error(), "")
	}
	return out, nil
}

// Del releases every address held by (ContainerID, IfName). Unknown attachments, a missing data
// dir and ranges that changed since ADD are all fine: only the network name and dataDir matter.
func Del(ctx context.Context, args *skel.CmdArgs) error {
	c, err := parseConfig(args.StdinData, args.Args, modeStore)
	if err != nil {
		return err
	}
	_, err = store(c).Release(ctx, args.ContainerID, args.IfName)
	return storeError(err)
}

// Check verifies that the attachment holds a reservation and that every address of
// prevResult that lies in our range sets is reserved for it.
func Check(ctx context.Context, args *skel.CmdArgs) error {
	c, err := LoadConfig(args.StdinData, args.Args)
	if err != nil {
		return err
	}
	nc := &types.NetConf{}
	if err := decodeNetConf(args.StdinData, nc); err != nil {
		return err
	}
	held, err := store(c).Lookup(ctx, args.ContainerID, args.IfName)
	if err != nil {
		return storeError(err)
	}
	if len(held) == 0 {
		return fmt.Errorf("host-local: failed to find address added by container %s (ifname %s) in network %q", args.ContainerID, args.IfName, c.Name)
	}
	if nc.PrevResult == nil {
		return nil
	}
	prev, err := current.NewResultFromResult(nc.PrevResult)
	if err != nil {
		return cnierr.Decoding(fmt.Errorf("convert prevResult: %w", err))
	}
	for _, ipc := range prev.IPs {
		ip, ok := netipFromIP(ipc.Address.IP)
		if !ok {
			continue
		}
		inOurs := false
		for _, set := range c.Sets {
			inOurs = inOurs || set.Contains(ip)
		}
		if !inOurs {
			continue
		}
		found := false
		for _, h := range held {
			found = found || h == ip
		}
		if !found {
			return fmt.Errorf("host-local: address %s of prevResult is not reserved for container %s (ifname %s) in network %q", ip, args.ContainerID, args.IfName, c.Name)
		}
	}
	return nil
}

func decodeNetConf(stdin []byte, nc *types.NetConf) error {
	if err := jsonUnmarshal(stdin, nc); err != nil {
		return cnierr.Decoding(fmt.Errorf("parse network config: %w", err))
	}
	if nc.RawPrevResult != nil {
		if err := version.ParsePrevResult(nc); err != nil {
			return cnierr.Decoding(fmt.Errorf("parse prevResult: %w", err))
		}
	}
	return nil
}

// GC releases every reservation of the network whose attachment is not in
// cni.dev/valid-attachments (an absent list means none is valid, as libcni and the reference
// v1.10 read it).
func GC(ctx context.Context, args *skel.CmdArgs) error {
	c, err := parseConfig(args.StdinData, args.Args, modeStore)
	if err != nil {
		return err
	}
	released, err := store(c).GC(ctx, c.ValidAttachments)
	if len(released) > 0 {
		Logf("GC released %d address(es) of network %q", len(released), c.Name)
	}
	return storeError(err)
}

// Status succeeds when an ADD could work: a valid config (ranges may come with runtimeConfig
// when the ipRanges capability is declared), a readable resolvConf, a usable data dir. It
// fails with code 50 otherwise. A full range set is not a STATUS failure: only ADD reports it.
func Status(ctx context.Context, args *skel.CmdArgs) error {
	unavailable := func(format string, a ...any) error {
		return types.NewError(cnierr.ErrPluginNotAvailable, "host-local: "+fmt.Sprintf(format, a...), "")
	}
	c, err := parseConfig(args.StdinData, args.Args, modeStatus)
	if err != nil {
		return unavailable("%v", err)
	}
	if c.ResolvConf != "" {
		if _, err := parseResolvConf(c.ResolvConf); err != nil {
			return unavailable("invalid ipam.resolvConf: %v", err)
		}
	}
	if err := store(c).Probe(); err != nil {
		return unavailable("data dir %s unusable: %v", c.DataDir, err)
	}
	return nil
}

// parseResolvConf reads the nameservers, domain, search list and options of a resolv.conf.
func parseResolvConf(path string) (*types.DNS, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dns := &types.DNS{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fields[1])
		case "domain":
			dns.Domain = fields[1]
		case "search":
			dns.Search = append(dns.Search, fields[1:]...)
		case "options":
			dns.Options = append(dns.Options, fields[1:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return dns, nil
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

func netipFromIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	return a.Unmap(), ok
}
