package hostlocal

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/cni-suite/cni-suite/pkg/cnierr"
	"github.com/cni-suite/cni-suite/pkg/ipalloc"
)

// Config is a validated host-local configuration for one invocation.
type Config struct {
	CNIVersion string
	Name       string // network name: the directory under DataDir
	DataDir    string
	ResolvConf string
	Routes     []*types.Route
	// Sets are the range sets in the reference's order: runtimeConfig.ipRanges, then the legacy
	// single range (ipam.subnet...), then ipam.ranges. SetFields names each in messages.
	Sets      []ipalloc.RangeSet
	SetFields []string
	// Requested holds, per set, the address asked for (CNI_ARGS IP, args.cni.ips,
	// runtimeConfig.ips); the zero Addr when none.
	Requested []netip.Addr
	// ValidAttachments is cni.dev/valid-attachments (GC); absent means none is valid.
	ValidAttachments []ipalloc.Attachment
	// IPRangesCapability is set when the config declares the ipRanges capability: its ranges
	// may arrive only with runtimeConfig.
	IPRangesCapability bool
}

type rangeJSON struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart"`
	RangeEnd   string `json:"rangeEnd"`
	Gateway    string `json:"gateway"`
}

func (r rangeJSON) spec() ipalloc.RangeSpec {
	return ipalloc.RangeSpec{Subnet: r.Subnet, RangeStart: r.RangeStart, RangeEnd: r.RangeEnd, Gateway: r.Gateway}
}

type ipamJSON struct {
	Type string `json:"type"`
	// The legacy single range, directly in ipam.
	Subnet     string            `json:"subnet"`
	RangeStart string            `json:"rangeStart"`
	RangeEnd   string            `json:"rangeEnd"`
	Gateway    string            `json:"gateway"`
	Ranges     [][]rangeJSON     `json:"ranges"`
	Routes     []json.RawMessage `json:"routes"`
	DataDir    string            `json:"dataDir"`
	ResolvConf string            `json:"resolvConf"`
}

type netJSON struct {
	CNIVersion    string          `json:"cniVersion"`
	Name          string          `json:"name"`
	IPAM          *ipamJSON       `json:"ipam"`
	Capabilities  map[string]bool `json:"capabilities"`
	RuntimeConfig *struct {
		IPRanges [][]rangeJSON `json:"ipRanges"`
		IPs      []string      `json:"ips"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
	ValidAttachments *[]types.GCAttachment `json:"cni.dev/valid-attachments"`
	// The spec's first text of GC named the key cni.dev/attachments; libcni sends both.
	Attachments *[]types.GCAttachment `json:"cni.dev/attachments"`
}

// Validation depth of a parse.
type parseMode int

const (
	// modeFull validates everything an ADD or CHECK needs.
	modeFull parseMode = iota
	// modeStatus is modeFull without the requested IPs, and without requiring a range when the
	// ipRanges capability may bring them at ADD time.
	modeStatus
	// modeStore needs only what names the store (name, dataDir): DEL and GC work from the
	// attachment alone, so a range that became invalid never blocks releasing addresses.
	modeStore
)

var networkNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// LoadConfig parses and validates stdin and CNI_ARGS for ADD and CHECK. Errors are CNI
// errors: code 6 for JSON that does not decode, 7 for an invalid value (naming the field),
// 4 for an invalid CNI_ARGS.
func LoadConfig(stdin []byte, cniArgs string) (*Config, error) {
	return parseConfig(stdin, cniArgs, modeFull)
}

func parseConfig(stdin []byte, cniArgs string, mode parseMode) (*Config, error) {
	var n netJSON
	if err := json.Unmarshal(stdin, &n); err != nil {
		return nil, cnierr.Decoding(fmt.Errorf("parse network config: %w", err))
	}
	c := &Config{CNIVersion: n.CNIVersion, Name: n.Name}
	if c.CNIVersion == "" {
		c.CNIVersion = "0.1.0" // as skel reads a config without cniVersion
	}
	if !networkNameRE.MatchString(n.Name) {
		return nil, cnierr.InvalidConfig("name", "%q is not a valid network name", n.Name)
	}
	if n.IPAM == nil {
		return nil, cnierr.InvalidConfig("ipam", "missing (the IPAM config must be under the 'ipam' key)")
	}
	c.DataDir = n.IPAM.DataDir
	if c.DataDir == "" {
		c.DataDir = ipalloc.DefaultDataDir
	}
	c.ResolvConf = n.IPAM.ResolvConf
	c.IPRangesCapability = n.Capabilities["ipRanges"]
	if n.ValidAttachments != nil {
		c.ValidAttachments = attachments(*n.ValidAttachments)
	} else if n.Attachments != nil {
		c.ValidAttachments = attachments(*n.Attachments)
	}
	if mode == modeStore {
		return c, nil
	}

	routes, err := parseRoutes(n.IPAM.Routes)
	if err != nil {
		return nil, err
	}
	c.Routes = routes

	// Range sets, in the reference's order.
	type src struct {
		field string
		specs []rangeJSON
	}
	var srcs []src
	if n.RuntimeConfig != nil {
		for i, set := range n.RuntimeConfig.IPRanges {
			srcs = append(srcs, src{fmt.Sprintf("runtimeConfig.ipRanges[%d]", i), set})
		}
	}
	if n.IPAM.Subnet != "" {
		srcs = append(srcs, src{"ipam", []rangeJSON{{n.IPAM.Subnet, n.IPAM.RangeStart, n.IPAM.RangeEnd, n.IPAM.Gateway}}})
	}
	for i, set := range n.IPAM.Ranges {
		srcs = append(srcs, src{fmt.Sprintf("ipam.ranges[%d]", i), set})
	}
	if len(srcs) == 0 {
		if mode == modeStatus && c.IPRangesCapability {
			return c, nil
		}
		return nil, cnierr.InvalidConfig("ipam.ranges", "no IP ranges specified (ipam.ranges, ipam.subnet or runtimeConfig.ipRanges)")
	}
	v4, v6 := 0, 0
	for _, s := range srcs {
		var set ipalloc.RangeSet
		var err error
		if s.field == "ipam" { // legacy: fields directly in ipam
			var r ipalloc.Range
			if r, err = ipalloc.NewRange("ipam", s.specs[0].spec()); err == nil {
				set = ipalloc.RangeSet{r}
			}
		} else {
			specs := make([]ipalloc.RangeSpec, len(s.specs))
			for j, r := range s.specs {
				specs[j] = r.spec()
			}
			set, err = ipalloc.NewRangeSet(s.field, specs)
		}
		if err != nil {
			return nil, fieldError(err)
		}
		if set.Is4() {
			v4++
		} else {
			v6++
		}
		c.Sets = append(c.Sets, set)
		c.SetFields = append(c.SetFields, s.field)
	}
	if v4 > 1 || v6 > 1 {
		if ok, err := version.GreaterThanOrEqualTo(c.CNIVersion, "0.3.0"); err != nil || !ok {
			return nil, cnierr.InvalidConfig("ipam.ranges", "CNI version %s does not support more than 1 address per family", c.CNIVersion)
		}
	}
	if i, j := ipalloc.SetsOverlap(c.Sets); i >= 0 {
		return nil, cnierr.InvalidConfig(c.SetFields[j], "range set %d (%s) overlaps with range set %d (%s)", j, c.Sets[j], i, c.Sets[i])
	}
	if mode == modeStatus {
		return c, nil
	}
	if err := c.requested(n, cniArgs); err != nil {
		return nil, err
	}
	return c, nil
}

func attachments(in []types.GCAttachment) []ipalloc.Attachment {
	out := make([]ipalloc.Attachment, 0, len(in))
	for _, a := range in {
		out = append(out, ipalloc.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	return out
}

func fieldError(err error) error {
	var fe *ipalloc.FieldError
	if errors.As(err, &fe) {
		return cnierr.InvalidConfig(fe.Field, "%s", fe.Msg)
	}
	return cnierr.Internal(err)
}

func parseRoutes(raw []json.RawMessage) ([]*types.Route, error) {
	var out []*types.Route
	for i, r := range raw {
		field := fmt.Sprintf("ipam.routes[%d]", i)
		var probe struct {
			Dst *string `json:"dst"`
			GW  *string `json:"gw"`
		}
		if err := json.Unmarshal(r, &probe); err != nil {
			return nil, cnierr.Decoding(fmt.Errorf("parse %s: %w", field, err))
		}
		if probe.Dst == nil || *probe.Dst == "" {
			return nil, cnierr.InvalidConfig(field+".dst", "missing")
		}
		if _, _, err := net.ParseCIDR(*probe.Dst); err != nil {
			return nil, cnierr.InvalidConfig(field+".dst", "%q is not a CIDR", *probe.Dst)
		}
		if probe.GW != nil && *probe.GW != "" && net.ParseIP(*probe.GW) == nil {
			return nil, cnierr.InvalidConfig(field+".gw", "%q is not an IP address", *probe.GW)
		}
		rt := &types.Route{}
		if err := json.Unmarshal(r, rt); err != nil {
			return nil, cnierr.Decoding(fmt.Errorf("parse %s: %w", field, err))
		}
		out = append(out, rt)
	}
	return out, nil
}

type request struct {
	ip    netip.Addr
	field string
	env   bool // from CNI_ARGS (code 4) rather than the config (code 7)
}

func (r request) err(format string, a ...any) error {
	if r.env {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "invalid "+r.field+": "+fmt.Sprintf(format, a...), "")
	}
	return cnierr.InvalidConfig(r.field, format, a...)
}

// requested gathers the requested IPs and gives each its range set.
func (c *Config) requested(n netJSON, cniArgs string) error {
	var reqs []request
	envIPs, err := parseCNIArgs(cniArgs)
	if err != nil {
		return err
	}
	for i, s := range envIPs {
		ip, err := ipalloc.ParseAddrOrCIDR(strings.TrimSpace(s))
		if err != nil {
			return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("invalid CNI_ARGS IP (item %d): %v", i, err), "")
		}
		reqs = append(reqs, request{ip, "CNI_ARGS IP", true})
	}
	add := func(field string, list []string) error {
		for i, s := range list {
			f := fmt.Sprintf("%s[%d]", field, i)
			ip, err := ipalloc.ParseAddrOrCIDR(s)
			if err != nil {
				return cnierr.InvalidConfig(f, "%v", err)
			}
			reqs = append(reqs, request{ip, f, false})
		}
		return nil
	}
	if n.Args != nil && n.Args.CNI != nil {
		if err := add("args.cni.ips", n.Args.CNI.IPs); err != nil {
			return err
		}
	}
	if n.RuntimeConfig != nil {
		if err := add("runtimeConfig.ips", n.RuntimeConfig.IPs); err != nil {
			return err
		}
	}
	c.Requested = make([]netip.Addr, len(c.Sets))
	for _, r := range reqs {
		set := -1
		for i := range c.Sets {
			if c.Sets[i].Contains(r.ip) {
				set = i
				break
			}
		}
		if set < 0 {
			return r.err("requested IP %s is in no range set (%s)", r.ip, c.describeSets())
		}
		if prev := c.Requested[set]; prev.IsValid() {
			if prev == r.ip {
				continue // asked twice, as the reference allows
			}
			return r.err("requested IPs %s and %s are both in range set %d (%s): one address per range set", prev, r.ip, set, c.Sets[set])
		}
		rg := c.Sets[set].RangeFor(r.ip)
		if !rg.Allocatable(r.ip) {
			what := "network"
			if r.ip == rg.Gateway {
				what = "gateway"
			} else if r.ip != rg.Subnet.Addr() {
				what = "broadcast"
			}
			return r.err("requested IP %s is the %s address of subnet %s", r.ip, what, rg.Subnet)
		}
		c.Requested[set] = r.ip
	}
	return nil
}

func (c *Config) describeSets() string {
	parts := make([]string, len(c.Sets))
	for i, s := range c.Sets {
		parts[i] = fmt.Sprintf("%d: %s", i, s)
	}
	return strings.Join(parts, "; ")
}

// parseCNIArgs reads CNI_ARGS as the reference does (K=V pairs separated by ';', keys IP and
// IgnoreUnknown, unknown keys an error unless IgnoreUnknown is true); IP may hold several
// addresses separated by ',' (one per range set).
func parseCNIArgs(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	bad := func(format string, a ...any) error {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "invalid CNI_ARGS: "+fmt.Sprintf(format, a...), "")
	}
	var ips, unknown []string
	ignore := false
	for _, pair := range strings.Split(s, ";") {
		kv := strings.Split(pair, "=")
		if len(kv) != 2 {
			return nil, bad("invalid pair %q", pair)
		}
		switch kv[0] {
		case "IP":
			ips = nil
			if kv[1] != "" {
				ips = strings.Split(kv[1], ",")
			}
		case "IgnoreUnknown":
			switch strings.ToLower(kv[1]) {
			case "1", "true":
				ignore = true
			case "0", "false":
				ignore = false
			default:
				return nil, bad("IgnoreUnknown=%q is not a boolean", kv[1])
			}
		default:
			unknown = append(unknown, pair)
		}
	}
	if len(unknown) > 0 && !ignore {
		return nil, bad("unknown args %q (set IgnoreUnknown=1 to ignore them)", unknown)
	}
	return ips, nil
}
