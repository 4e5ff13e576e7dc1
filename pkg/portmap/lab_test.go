package portmap_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cni-suite/cni-suite/pkg/testenv"
)

// lab is a node with a bridge (cnip0: 10.66.0.1/24, fd66::1/64) and a host interface
// (hosteth: 10.55.0.1/24, fd55::1/64), plumbed by hand with ip(8), so the portmap tests do not
// depend on the bridge plugin. Pods get a veth on the bridge and serve HTTP on 80 and UDP
// echo on 53, answering with their name and the client address they see.
type lab struct {
	node *testenv.Node
}

type pod struct {
	name   string
	ns     *testenv.NS
	v4, v6 string
}

const (
	hostV4 = "10.55.0.1"
	hostV6 = "fd55::1"
	brV4   = "10.66.0.1"
)

func newLab(t *testing.T) *lab {
	node := testenv.NewNode(t)
	for _, c := range [][]string{
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"},
		// A fixed MAC: otherwise the bridge takes its lowest port's, and a pod added later can
		// change it under the neighbour entries of the pods before it.
		{"ip", "link", "add", "cnip0", "address", "02:00:00:00:00:01", "type", "bridge", "mcast_snooping", "0"},
		{"ip", "addr", "add", "10.66.0.1/24", "dev", "cnip0"},
		{"ip", "addr", "add", "fd66::1/64", "dev", "cnip0", "nodad"},
		{"ip", "link", "set", "cnip0", "up"},
		{"ip", "link", "add", "hosteth", "type", "veth", "peer", "name", "hostpeer"},
		{"ip", "link", "set", "hostpeer", "up"},
		{"ip", "addr", "add", hostV4 + "/24", "dev", "hosteth"},
		{"ip", "addr", "add", hostV6 + "/64", "dev", "hosteth", "nodad"},
		{"ip", "link", "set", "hosteth", "up"},
	} {
		node.MustExec(t, c[0], c[1:]...)
	}
	return &lab{node: node}
}

// addPod plumbs pod number i (10.66.0.<i>, fd66::<i>) and starts its servers.
func (l *lab) addPod(t *testing.T, name string, i int) *pod {
	p := &pod{name: name, ns: l.node.NewPod(t), v4: fmt.Sprintf("10.66.0.%d", i), v6: fmt.Sprintf("fd66::%d", i)}
	veth := fmt.Sprintf("vethp%d", i)
	l.node.MustExec(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", p.ns.Name)
	l.node.MustExec(t, "ip", "link", "set", veth, "master", "cnip0", "up")
	// As the bridge plugin's hairpinMode (which runtimes set with portmap): with br_netfilter
	// loaded, hairpin traffic DNATed back to the pod leaves by the port it came in.
	l.node.MustExec(t, "ip", "link", "set", veth, "type", "bridge_slave", "hairpin", "on")
	for _, c := range [][]string{
		{"ip", "addr", "add", p.v4 + "/24", "dev", "eth0"},
		{"ip", "addr", "add", p.v6 + "/64", "dev", "eth0", "nodad"},
		{"ip", "link", "set", "eth0", "up"},
		{"ip", "route", "add", "default", "via", brV4},
		{"ip", "-6", "route", "add", "default", "via", "fd66::1"},
	} {
		p.ns.MustExec(t, c[0], c[1:]...)
	}
	// Neighbour discovery settles before the tests' first IPv6 connection.
	for _, a := range []string{p.v4, p.v6} {
		if _, err := l.node.Exec("ping", "-c1", "-W3", a); err != nil {
			t.Fatalf("pod %s at %s unreachable from the node", name, a)
		}
	}
	var ln net.Listener
	var pc net.PacketConn
	err := p.ns.Do(func() error {
		var err error
		if ln, err = net.Listen("tcp", ":80"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", ":53")
		return err
	})
	if err != nil {
		t.Fatalf("servers in %s: %v", name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.RemoteAddr)
	})}
	go srv.Serve(ln)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(name+" "+from.String()), from)
		}
	}()
	t.Cleanup(func() { srv.Close(); pc.Close() })
	return p
}

// prev is the pod's crafted prevResult (interface 2 is the container's eth0).
func (p *pod) prev(v4, v6 bool) string {
	var a []string
	if v4 {
		a = append(a, p.v4+"/24")
	}
	if v6 {
		a = append(a, p.v6+"/64")
	}
	return prevResult(a...)
}

// httpGet fetches http://addr/ from inside ns and returns the body ("<pod> <client addr>").
func httpGet(ns *testenv.NS, addr string) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, a)
			return err
		})
		return c, err
	}}
	cl := &http.Client{Transport: tr, Timeout: 3 * time.Second}
	resp, err := cl.Get("http://" + addr + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// udpConn is an unconnected UDP socket in ns, so one source port can be reused across sends.
func udpConn(t *testing.T, ns *testenv.NS, v6 bool) net.PacketConn {
	var pc net.PacketConn
	network, local := "udp4", "0.0.0.0:0"
	if v6 {
		network, local = "udp6", "[::]:0"
	}
	if err := ns.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, local)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// udpAsk sends one datagram to addr and waits briefly for the echo.
func udpAsk(pc net.PacketConn, addr string) (string, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return "", err
	}
	if _, err := pc.WriteTo([]byte("ping"), ua); err != nil {
		return "", err
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

func udpOnce(t *testing.T, ns *testenv.NS, addr string) (string, error) {
	return udpAsk(udpConn(t, ns, strings.HasPrefix(addr, "[")), addr)
}

// expectPod fails unless got came from the pod (and, when src is set, saw that client address).
func expectPod(t *testing.T, what, got string, err error, p *pod, src string) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	f := strings.Fields(got)
	if len(f) != 2 || f[0] != p.name {
		t.Errorf("%s: answered %q, want pod %s", what, got, p.name)
		return
	}
	if src != "" {
		h, _, _ := net.SplitHostPort(f[1])
		if h != src {
			t.Errorf("%s: pod saw client %s, want %s", what, h, src)
		}
	}
}

func expectClosed(t *testing.T, what string, got string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: still answered %q", what, got)
	}
}
