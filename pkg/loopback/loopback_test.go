package loopback_test

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

const conf = `{"cniVersion":"1.0.0","name":"lo-net","type":"loopback"}`

func setup(t *testing.T) (*testenv.Node, *testenv.NS, testenv.Call) {
	node := testenv.NewNode(t)
	pod := node.NewPod(t)
	pod.MustExec(t, "ip", "link", "set", "lo", "down")
	c := testenv.Call{
		Bin: filepath.Join(testenv.PluginDir(t), "loopback"), ContainerID: "c1",
		Netns: pod.Path, IfName: "eth0", In: node.NS, Config: []byte(conf),
	}
	return node, pod, c
}

func run(t *testing.T, c testenv.Call, cmd string) testenv.Out {
	t.Helper()
	c.Command = cmd
	return testenv.Run(t, c)
}

func TestAddBringsLoUpAndReportsAddresses(t *testing.T) {
	_, pod, c := setup(t)
	o := run(t, c, "ADD").MustSucceed(t)
	if out := pod.MustExec(t, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
		t.Fatalf("lo not up after ADD: %s", out)
	}
	r := o.Result(t, "1.0.0")
	if len(r.Interfaces) != 1 || r.Interfaces[0].Name != "lo" || r.Interfaces[0].Sandbox != pod.Path {
		t.Fatalf("interfaces = %+v", r.Interfaces)
	}
	var got []string
	for _, ip := range r.IPs {
		got = append(got, ip.Address.String())
	}
	if strings.Join(got, ",") != "127.0.0.1/8,::1/128" {
		t.Fatalf("ips = %v, want 127.0.0.1/8 and ::1/128", got)
	}
	if out := pod.MustExec(t, "ping", "-c1", "-W1", "127.0.0.1"); !strings.Contains(out, "1 received") {
		t.Fatalf("ping 127.0.0.1 in pod: %s", out)
	}
}

func TestCheckFollowsLinkState(t *testing.T) {
	_, pod, c := setup(t)
	run(t, c, "CHECK").MustFail(t, 999).ErrContains(t, "down")
	run(t, c, "ADD").MustSucceed(t)
	run(t, c, "CHECK").MustSucceed(t)
	pod.MustExec(t, "ip", "addr", "add", "10.9.9.9/32", "dev", "lo")
	run(t, c, "CHECK").MustFail(t, 999).ErrContains(t, "10.9.9.9")
}

func TestDelBringsLoDownAndIsIdempotent(t *testing.T) {
	_, pod, c := setup(t)
	run(t, c, "ADD").MustSucceed(t)
	run(t, c, "DEL").MustSucceed(t)
	if out := pod.MustExec(t, "ip", "-o", "link", "show", "lo"); strings.Contains(out, ",UP") {
		t.Fatalf("lo still up after DEL: %s", out)
	}
	run(t, c, "DEL").MustSucceed(t)
	pod.Delete(t)
	run(t, c, "DEL").MustSucceed(t)
}

func TestChainedPassesPrevResultThrough(t *testing.T) {
	_, _, c := setup(t)
	prev := `{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.1.2.3/24","interface":0}]}`
	c.Config = []byte(`{"cniVersion":"1.0.0","name":"lo-net","type":"loopback","prevResult":` + prev + `}`)
	o := run(t, c, "ADD").MustSucceed(t)
	var got, want any
	_ = json.Unmarshal(o.Stdout, &got)
	_ = json.Unmarshal([]byte(prev), &want)
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Fatalf("prevResult changed:\n got %s\nwant %s", gb, wb)
	}
}

func TestBadInput(t *testing.T) {
	_, _, c := setup(t)
	c.Config = []byte(`{"cniVersion":"1.0.0","name":"x","type":"loopback","prevResult":{"cniVersion":"1.0.0","ips":"nope"}}`)
	run(t, c, "ADD").MustFail(t, 6).ErrContains(t, "prevResult")
}
