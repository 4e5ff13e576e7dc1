package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Cluster is the control plane and the node of one runtime's flow, all inside one Node.
type Cluster struct {
	*Node
	Bin       string // Kubernetes binaries (etcd, kube-*, kubectl, crictl)
	PKI       *PKI
	AdminConf string
	// CNICacheDir is the runtime's libcni cache dir, as the node sees it.
	CNICacheDir string
	KubeletCfg  string
	api         *http.Client
	procs       map[string]*Proc
	logf        func(string, ...any)
}

const apiServer = "https://127.0.0.1:6443"

// StartControlPlane writes the PKI and kubeconfigs and starts etcd, kube-apiserver,
// kube-controller-manager (allocating node podCIDRs) and kube-scheduler in the node.
func StartControlPlane(ctx context.Context, n *Node, bin string, logf func(string, ...any)) (*Cluster, error) {
	c := &Cluster{Node: n, Bin: bin, procs: map[string]*Proc{}, logf: logf}
	pki, err := NewPKI(filepath.Join(n.State, "pki"))
	if err != nil {
		return c, err
	}
	c.PKI = pki
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(nodeIP), net.ParseIP(serviceIP)}
	certs := map[string]CertSpec{
		"apiserver": {CN: "kube-apiserver", IPs: ips, Server: true,
			DNS: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		"apiserver-kubelet-client": {CN: "kube-apiserver-kubelet-client", Orgs: []string{"system:masters"}, Client: true},
		"admin":                    {CN: "cnis-e2e-admin", Orgs: []string{"system:masters"}, Client: true},
		"controller-manager":       {CN: "system:kube-controller-manager", Client: true},
		"scheduler":                {CN: "system:kube-scheduler", Client: true},
		"kubelet":                  {CN: "system:node:" + nodeName, Orgs: []string{"system:nodes"}, Client: true},
	}
	pairs := map[string]Pair{}
	for name, spec := range certs {
		spec.Name = name
		if pairs[name], err = pki.Issue(spec); err != nil {
			return c, err
		}
	}
	saPub, saKey, err := pki.ServiceAccountKeys()
	if err != nil {
		return c, err
	}
	confs := map[string]string{}
	for _, name := range []string{"admin", "controller-manager", "scheduler", "kubelet"} {
		confs[name] = filepath.Join(n.State, "pki", name+".kubeconfig")
		if err := os.WriteFile(confs[name], []byte(Kubeconfig(apiServer, pki.CACert, pairs[name])), 0o600); err != nil {
			return c, err
		}
	}
	c.AdminConf = confs["admin"]
	if err := c.initAPIClient(pairs["admin"]); err != nil {
		return c, err
	}
	for _, d := range []string{"etcd", "home", "flex", "kubelet", "containerd"} {
		if err := os.MkdirAll(filepath.Join(n.State, d), 0o700); err != nil {
			return c, err
		}
	}

	if err := c.start("etcd", filepath.Join(bin, "etcd"),
		"--name=node", "--data-dir="+filepath.Join(n.State, "etcd"),
		"--listen-client-urls=http://127.0.0.1:2379", "--advertise-client-urls=http://127.0.0.1:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=node=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return c, err
	}
	if err := waitFor(ctx, 30*time.Second, 100*time.Millisecond, "etcd health", func() (bool, error) {
		if err := c.alive("etcd"); err != nil {
			return false, err
		}
		b, err := c.httpGet(ctx, &http.Client{Transport: c.plainTransport()}, "http://127.0.0.1:2379/health")
		return err == nil && strings.Contains(string(b), `"health":"true"`), err
	}); err != nil {
		return c, err
	}

	if err := c.start("kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=127.0.0.1", "--secure-port=6443", "--advertise-address="+nodeIP,
		"--tls-cert-file="+pairs["apiserver"].Cert, "--tls-private-key-file="+pairs["apiserver"].Key,
		"--client-ca-file="+pki.CACert,
		"--kubelet-client-certificate="+pairs["apiserver-kubelet-client"].Cert,
		"--kubelet-client-key="+pairs["apiserver-kubelet-client"].Key,
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range="+serviceCIDR,
		"--authorization-mode=Node,RBAC", "--allow-privileged=true", "--profiling=false",
		"--enable-priority-and-fairness=false", "--v=1"); err != nil {
		return c, err
	}
	if err := waitFor(ctx, 90*time.Second, 200*time.Millisecond, "kube-apiserver /readyz", func() (bool, error) {
		if err := c.alive("kube-apiserver"); err != nil {
			return false, err
		}
		b, err := c.httpGet(ctx, c.api, apiServer+"/readyz")
		return err == nil && strings.TrimSpace(string(b)) == "ok", err
	}); err != nil {
		return c, err
	}

	if err := c.start("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+confs["controller-manager"],
		"--authentication-kubeconfig="+confs["controller-manager"],
		"--authorization-kubeconfig="+confs["controller-manager"],
		"--bind-address=127.0.0.1", "--leader-elect=false",
		"--allocate-node-cidrs", "--cluster-cidr="+clusterCIDR, "--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+serviceCIDR,
		"--root-ca-file="+pki.CACert, "--service-account-private-key-file="+saKey,
		"--use-service-account-credentials",
		"--flex-volume-plugin-dir="+filepath.Join(n.State, "flex"),
		"--v=1"); err != nil {
		return c, err
	}
	if err := c.start("kube-scheduler", filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig="+confs["scheduler"],
		"--authentication-kubeconfig="+confs["scheduler"],
		"--authorization-kubeconfig="+confs["scheduler"],
		"--bind-address=127.0.0.1", "--leader-elect=false", "--v=1"); err != nil {
		return c, err
	}
	return c, nil
}

func (c *Cluster) start(name, bin string, args ...string) error {
	p, err := c.sup.Start(c.Label+"-"+name, []string{"HOME=" + filepath.Join(c.State, "home")}, c.Enter(append([]string{bin}, args...)...)...)
	if err != nil {
		return err
	}
	c.procs[name] = p
	c.logf("started %s (pid %d, log %s)", name, p.PID, p.Log)
	return nil
}

// alive fails when the named daemon has exited, quoting the end of its log.
func (c *Cluster) alive(name string) error {
	p := c.procs[name]
	if p == nil {
		return fmt.Errorf("%s was not started", name)
	}
	if done, err := p.Exited(); done {
		b, _ := os.ReadFile(p.Log)
		return fmt.Errorf("%s exited (%v); its log ends:\n%s", name, err, lastLines(string(b), 15))
	}
	return nil
}

// Stop stops one daemon by its recorded PID.
func (c *Cluster) Stop(name string, grace time.Duration) {
	if p := c.procs[name]; p != nil {
		c.sup.Stop(p, grace)
		c.logf("stopped %s (pid %d)", name, p.PID)
		delete(c.procs, name)
	}
}

func (c *Cluster) nodeDialer(ctx context.Context, network, addr string) (net.Conn, error) {
	return dialIn(c.NetNS, addr, 5*time.Second)
}

func (c *Cluster) plainTransport() *http.Transport {
	return &http.Transport{DialContext: c.nodeDialer, DisableKeepAlives: true}
}

func (c *Cluster) initAPIClient(admin Pair) error {
	caPEM, err := os.ReadFile(c.PKI.CACert)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(admin.Cert, admin.Key)
	if err != nil {
		return err
	}
	c.api = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{
		DialContext:     c.nodeDialer,
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}
	return nil
}

func (c *Cluster) httpGet(ctx context.Context, cl *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return b, nil
}

// GetJSON reads an API path (e.g. /api/v1/nodes/x) into v.
func (c *Cluster) GetJSON(ctx context.Context, path string, v any) error {
	b, err := c.httpGet(ctx, c.api, apiServer+path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// Kubectl runs kubectl in the node's namespaces with the admin kubeconfig and a private cache.
func (c *Cluster) Kubectl(ctx context.Context, timeout time.Duration, args ...string) (string, error) {
	argv := append([]string{filepath.Join(c.Bin, "kubectl"), "--kubeconfig=" + c.AdminConf,
		"--cache-dir=" + filepath.Join(c.State, "home", "kubectl-cache")}, args...)
	return c.Exec(ctx, timeout, argv...)
}

// KubectlApply applies a manifest given as text.
func (c *Cluster) KubectlApply(ctx context.Context, name, manifest string) error {
	p := filepath.Join(c.State, "manifests", name+".yaml")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, []byte(manifest), 0o644); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, 60*time.Second, "apply", "-f", p)
	return err
}
