// Package conformance runs one table of CNI spec requirements (../shared/CNI-CHECKLIST.md)
// against every plugin binary of the suite and, row for row, against the reference plugins
// v1.9.1, so the two implementations answer the protocol the same way.
package conformance

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

var allVersions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// env is what one row of one plugin gets: a node netns, a pod netns, and the plugin directory.
type env struct {
	Node *testenv.Node
	Pod  *testenv.NS
	Dir  string
}

// pluginCase describes one plugin binary for the table.
type pluginCase struct {
	name   string
	bin    string // the plugin binary, when not name (a second config of one plugin)
	ifName string
	// config returns a valid config of this plugin for the cniVersion, for a successful ADD in e.
	config func(t *testing.T, e *env, cniVersion string) []byte
	// differs names rows where our implementation deliberately differs from the reference,
	// with the reason; those rows run only against ours.
	differs map[string]string
}

func (p pluginCase) binary() string {
	if p.bin != "" {
		return p.bin
	}
	return p.name
}

// plugins is filled by one init() per plugin (conformance_<plugin>_test.go).
var plugins []pluginCase

type impl struct {
	name string
	dir  func(t *testing.T) string
}

var impls = []impl{
	{"ours", func(t *testing.T) string { return testenv.PluginDir(t) }},
	{"reference", func(t *testing.T) string { return testenv.RefPluginDir(t, testenv.RefVersion) }},
}

// row is one requirement; it runs with a fresh node and pod.
type row struct {
	name string
	run  func(t *testing.T, p pluginCase, e *env)
}

func call(p pluginCase, e *env, cmd, cniVersion string) testenv.Call {
	return testenv.Call{
		Bin: filepath.Join(e.Dir, p.binary()), Command: cmd, ContainerID: "conformance-1",
		Netns: e.Pod.Path, IfName: p.ifName, In: e.Node.NS,
	}
}

func withConfig(c testenv.Call, b []byte) testenv.Call { c.Config = b; return c }

var rows = []row{
	{"version-lists-all", func(t *testing.T, p pluginCase, e *env) {
		c := call(p, e, "VERSION", "")
		c.Config = []byte(`{"cniVersion":"1.1.0"}`)
		o := testenv.Run(t, c).MustSucceed(t)
		var got struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}
		if err := json.Unmarshal(o.Stdout, &got); err != nil {
			t.Fatalf("VERSION output is not JSON: %v: %s", err, o.Stdout)
		}
		if got.CNIVersion != "1.1.0" || !reflect.DeepEqual(got.SupportedVersions, allVersions) {
			t.Fatalf("VERSION = %+v, want 1.1.0 and %v", got, allVersions)
		}
	}},
	{"no-command-prints-about-on-stderr", func(t *testing.T, p pluginCase, e *env) {
		c := call(p, e, "", "")
		o := testenv.Run(t, c)
		if o.ExitCode != 0 || len(o.Stdout) != 0 || !strings.Contains(string(o.Stderr), "CNI protocol versions supported: 0.1.0") {
			t.Fatalf("want exit 0, nothing on stdout, versions on stderr: %s", o)
		}
	}},
	{"unknown-command-code-4", func(t *testing.T, p pluginCase, e *env) {
		c := withConfig(call(p, e, "FROB", ""), p.config(t, e, "1.0.0"))
		testenv.Run(t, c).MustFail(t, types.ErrInvalidEnvironmentVariables).ErrContains(t, "FROB")
	}},
	{"missing-env-code-4", func(t *testing.T, p pluginCase, e *env) {
		for _, v := range []string{"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"} {
			c := withConfig(call(p, e, "ADD", ""), p.config(t, e, "1.0.0"))
			c.Unset = []string{v}
			testenv.Run(t, c).MustFail(t, types.ErrInvalidEnvironmentVariables).ErrContains(t, v)
		}
	}},
	{"invalid-env-code-4", func(t *testing.T, p pluginCase, e *env) {
		for _, mod := range []func(*testenv.Call){
			func(c *testenv.Call) { c.ContainerID = "bad id!" },
			func(c *testenv.Call) { c.IfName = "a-name-longer-than-15" },
			func(c *testenv.Call) { c.IfName = "bad/name" },
		} {
			c := withConfig(call(p, e, "ADD", ""), p.config(t, e, "1.0.0"))
			mod(&c)
			testenv.Run(t, c).MustFail(t, types.ErrInvalidEnvironmentVariables)
		}
	}},
	{"malformed-json-code-6", func(t *testing.T, p pluginCase, e *env) {
		for _, cmd := range []string{"ADD", "DEL", "CHECK"} {
			c := withConfig(call(p, e, cmd, ""), []byte(`{"cniVersion":"1.0.0","name":`))
			testenv.Run(t, c).MustFail(t, types.ErrDecodingFailure)
		}
	}},
	{"unsupported-version-code-1", func(t *testing.T, p pluginCase, e *env) {
		for _, v := range []string{"0.0.9", "9.9.9"} {
			c := withConfig(call(p, e, "ADD", ""), p.config(t, e, v))
			testenv.Run(t, c).MustFail(t, types.ErrIncompatibleCNIVersion)
		}
	}},
	{"verbs-newer-than-config-code-1", func(t *testing.T, p pluginCase, e *env) {
		for cmd, v := range map[string]string{"CHECK": "0.3.1", "GC": "1.0.0", "STATUS": "1.0.0"} {
			c := withConfig(call(p, e, cmd, ""), p.config(t, e, v))
			testenv.Run(t, c).MustFail(t, types.ErrIncompatibleCNIVersion)
		}
	}},
	{"add-result-per-version", func(t *testing.T, p pluginCase, e *env) {
		for i, v := range allVersions {
			c := withConfig(call(p, e, "ADD", ""), p.config(t, e, v))
			c.ContainerID = fmt.Sprintf("conformance-v%d", i)
			o := testenv.Run(t, c).MustSucceed(t)
			checkResultShape(t, v, o.Stdout)
			o.Result(t, v)
			c.Command = "DEL"
			testenv.Run(t, c).MustSucceed(t)
		}
	}},
	{"check-gc-status-succeed", func(t *testing.T, p pluginCase, e *env) {
		conf := p.config(t, e, "1.1.0")
		add := testenv.Run(t, withConfig(call(p, e, "ADD", ""), conf)).MustSucceed(t)
		withPrev := injectPrevResult(t, conf, add.Stdout)
		testenv.Run(t, withConfig(call(p, e, "CHECK", ""), withPrev)).MustSucceed(t)
		gc := injectKey(t, conf, "cni.dev/valid-attachments", []map[string]string{{"containerID": "conformance-1", "ifname": p.ifName}})
		testenv.Run(t, withConfig(call(p, e, "GC", ""), gc)).MustSucceed(t)
		testenv.Run(t, withConfig(call(p, e, "STATUS", ""), conf)).MustSucceed(t)
		testenv.Run(t, withConfig(call(p, e, "DEL", ""), withPrev)).MustSucceed(t)
	}},
	{"del-twice-and-without-netns", func(t *testing.T, p pluginCase, e *env) {
		conf := p.config(t, e, "1.0.0")
		testenv.Run(t, withConfig(call(p, e, "ADD", ""), conf)).MustSucceed(t)
		e.Pod.Delete(t)
		for i := 0; i < 2; i++ {
			o := testenv.Run(t, withConfig(call(p, e, "DEL", ""), conf)).MustSucceed(t)
			if len(o.Stdout) != 0 {
				t.Fatalf("DEL printed on stdout: %s", o.Stdout)
			}
		}
		c := withConfig(call(p, e, "DEL", ""), conf)
		c.Netns = ""
		testenv.Run(t, c).MustSucceed(t)
	}},
}

// checkResultShape checks the raw JSON against what the spec says of each version.
func checkResultShape(t *testing.T, v string, raw []byte) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: stdout is not one JSON object: %v\n%s", v, err, raw)
	}
	if m["cniVersion"] != v {
		t.Fatalf("result cniVersion %v, want %s", m["cniVersion"], v)
	}
	ips, _ := m["ips"].([]any)
	for _, ip := range ips {
		_, hasVersion := ip.(map[string]any)["version"]
		old := v == "0.3.0" || v == "0.3.1" || v == "0.4.0"
		if hasVersion != old {
			t.Errorf("%s: ips[].version present=%v, want %v: %s", v, hasVersion, old, raw)
		}
	}
	if (v == "0.1.0" || v == "0.2.0") && m["interfaces"] != nil {
		t.Errorf("%s result has interfaces: %s", v, raw)
	}
}

func injectKey(t *testing.T, conf []byte, key string, value any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(conf, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = value
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func injectPrevResult(t *testing.T, conf, result []byte) []byte {
	t.Helper()
	var r any
	if err := json.Unmarshal(result, &r); err != nil {
		t.Fatal(err)
	}
	return injectKey(t, conf, "prevResult", r)
}

func TestConformance(t *testing.T) {
	testenv.RequireRoot(t)
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			dir := im.dir(t)
			for _, p := range plugins {
				t.Run(p.name, func(t *testing.T) {
					if _, err := os.Stat(filepath.Join(dir, p.binary())); err != nil {
						t.Fatalf("plugin binary missing: %v", err)
					}
					for _, r := range rows {
						t.Run(r.name, func(t *testing.T) {
							if why, ok := p.differs[r.name]; ok && im.name != "ours" {
								t.Skipf("deliberate difference: %s", why)
							}
							node := testenv.NewNode(t)
							r.run(t, p, &env{Node: node, Pod: node.NewPod(t), Dir: dir})
						})
					}
				})
			}
		})
	}
}
