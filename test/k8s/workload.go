package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
)

const (
	webPort  = 8080
	hostPort = 30080
	logMark  = "cnis-web-started"
)

// workloadManifest renders the two Deployments: web (busybox httpd with a hostPort, answering
// hello-from-<pod name>) and client (sleeps; the checks exec into it). Commands are absolute
// host-valid paths (/bin/busybox), so the same pods run from the busybox image under containerd
// and as host processes under the CRI shim. webRoot is where web writes its page.
func workloadManifest(image, webRoot string) string {
	deploy := func(name, container, cmd, extra string) string {
		return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      terminationGracePeriodSeconds: 1
      automountServiceAccountToken: false
      enableServiceLinks: false
      containers:
      - name: %[2]s
        image: %[3]s
        imagePullPolicy: Never
        command: ["/bin/busybox", "sh", "-c", %[4]q]
%[5]s`, name, container, image, cmd, extra)
	}
	web := deploy("cnis-web", "web",
		fmt.Sprintf(`mkdir -p %[1]s && echo "hello-from-$(hostname)" > %[1]s/index.html && echo %[2]s && exec /bin/busybox httpd -f -vv -p %[3]d -h %[1]s`, webRoot, logMark, webPort),
		fmt.Sprintf(`        ports:
        - {containerPort: %d, hostPort: %d, protocol: TCP}
        readinessProbe:
          tcpSocket: {port: %d}
          periodSeconds: 1
`, webPort, hostPort, webPort))
	client := deploy("cnis-client", "client", `echo client-started; exec /bin/busybox sleep 1000000`, "")
	return web + "---\n" + client
}

// wget is the argv fetching url inside a pod, bounded by busybox timeout (Debian's static
// busybox wget crashes on its own -T option when no libc NSS files are around, as in the image).
func wget(url string) []string {
	return []string{"/bin/busybox", "timeout", "10", "/bin/busybox", "wget", "-q", "-O", "-", url}
}

// httpGetIn fetches url from inside the network namespace nsPath and returns the body.
func httpGetIn(ctx context.Context, nsPath, url string) (string, error) {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(nsPath, addr, 5*time.Second)
		}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), nil
}

// expectHello checks that a body is web's page.
func expectHello(body, webPod string) error {
	if want := "hello-from-" + webPod; strings.TrimSpace(body) != want {
		return fmt.Errorf("got %q, want %q", strings.TrimSpace(body), want)
	}
	return nil
}

// podState is what the pod checks learned about the two pods.
type podState struct {
	web, client       podObj
	webCID, clientCID string // sandbox (container) IDs, from the CNI cache
	ips               []string
}

// runPodChecks deploys the workload and runs the traffic, logs and exec checks, then deletes
// the pods and checks that nothing of them is left.
func runPodChecks(ctx context.Context, f *flow, c *Cluster, podCIDR, webRoot, image string) {
	var st podState
	f.step("two Deployment pods Running and Ready", true, func() error {
		if err := c.KubectlApply(ctx, "workload", workloadManifest(image, webRoot)); err != nil {
			return err
		}
		return waitFor(ctx, 90*time.Second, 250*time.Millisecond, "pods ready", func() (bool, error) {
			pods, err := c.Pods(ctx, "default", "app in (cnis-web,cnis-client)")
			if err != nil {
				return false, err
			}
			var ready []podObj
			for _, p := range pods {
				if p.Status.Phase == "Running" && p.Ready() && p.Status.PodIP != "" && p.Metadata.DeletionTimestamp == nil {
					ready = append(ready, p)
				}
			}
			if len(ready) != 2 {
				return false, fmt.Errorf("%d of 2 pods ready: %s", len(ready), describePods(pods))
			}
			for _, p := range ready {
				if p.Metadata.Labels["app"] == "cnis-web" {
					st.web = p
				} else {
					st.client = p
				}
			}
			return st.web.Metadata.Name != "" && st.client.Metadata.Name != "", nil
		})
	})
	f.step("pod IPs distinct, inside the node's podCIDR", false, func() error {
		_, cidr, err := net.ParseCIDR(podCIDR)
		if err != nil {
			return err
		}
		a, b := st.web.Status.PodIP, st.client.Status.PodIP
		if a == b {
			return fmt.Errorf("both pods have %s", a)
		}
		for _, ip := range []string{a, b} {
			if p := net.ParseIP(ip); p == nil || !cidr.Contains(p) {
				return fmt.Errorf("pod IP %s not in %s", ip, podCIDR)
			}
		}
		st.ips = []string{a, b}
		return nil
	})
	f.step("API podIP equals the CNI result", false, func() error {
		entries, err := c.CNICache()
		if err != nil {
			return err
		}
		for _, p := range []*podObj{&st.web, &st.client} {
			var found *cniCacheEntry
			for i := range entries {
				if entries[i].Arg("K8S_POD_NAME") == p.Metadata.Name && entries[i].IfName == "eth0" {
					found = &entries[i]
				}
			}
			if found == nil {
				return fmt.Errorf("no CNI cache entry for pod %s in %s/results", p.Metadata.Name, c.CNICacheDir)
			}
			if !slices.Contains(found.IPs(), p.Status.PodIP) {
				return fmt.Errorf("pod %s: API podIP %s, CNI result %v", p.Metadata.Name, p.Status.PodIP, found.IPs())
			}
			if p == &st.web {
				st.webCID = found.ContainerID
			} else {
				st.clientCID = found.ContainerID
			}
		}
		return nil
	})
	webURL := fmt.Sprintf("http://%s:%d/", st.web.Status.PodIP, webPort)
	f.step("node -> pod HTTP", false, func() error {
		body, err := httpGetIn(ctx, c.NetNS, webURL)
		if err != nil {
			return err
		}
		return expectHello(body, st.web.Metadata.Name)
	})
	f.step("pod -> pod HTTP (kubectl exec client wget)", false, func() error {
		out, err := c.Kubectl(ctx, 30*time.Second, append([]string{"exec", st.client.Metadata.Name, "--"}, wget(webURL)...)...)
		if err != nil {
			return err
		}
		return expectHello(out, st.web.Metadata.Name)
	})
	hp := func(from, nsPath, host string) func() error {
		return func() error {
			body, err := httpGetIn(ctx, nsPath, fmt.Sprintf("http://%s:%d/", host, hostPort))
			if err != nil {
				return fmt.Errorf("from %s: %w", from, err)
			}
			return expectHello(body, st.web.Metadata.Name)
		}
	}
	f.step("hostPort via node IP, from the node", false, hp("node", c.NetNS, nodeIP))
	f.step("hostPort via node IP, from outside the node", false, hp("peer netns", c.PeerNS, nodeIP))
	f.step("hostPort via 127.0.0.1 on the node", false, hp("node", c.NetNS, "127.0.0.1"))
	f.step("hostPort hairpin (web pod -> node IP:hostPort -> itself)", false, func() error {
		out, err := c.Kubectl(ctx, 30*time.Second, append([]string{"exec", st.web.Metadata.Name, "--"},
			wget(fmt.Sprintf("http://%s:%d/", nodeIP, hostPort))...)...)
		if err != nil {
			return err
		}
		return expectHello(out, st.web.Metadata.Name)
	})
	f.step("kubectl logs", false, func() error {
		return waitFor(ctx, 15*time.Second, 500*time.Millisecond, "the web pod's log line", func() (bool, error) {
			out, err := c.Kubectl(ctx, 20*time.Second, "logs", st.web.Metadata.Name)
			if err != nil {
				return false, err
			}
			return strings.Contains(out, logMark), fmt.Errorf("log has no %q: %q", logMark, lastLines(out, 3))
		})
	})
	f.step("kubectl exec (stdout, stderr, exit code)", false, func() error {
		out, err := c.Kubectl(ctx, 20*time.Second, "exec", st.client.Metadata.Name, "--",
			"/bin/busybox", "sh", "-c", "echo exec-out; echo exec-err >&2; exit 3")
		if err == nil || !strings.Contains(err.Error(), "exit status 3") {
			return fmt.Errorf("want exit status 3, got %v", err)
		}
		if !strings.Contains(out, "exec-out") || !strings.Contains(out, "exec-err") {
			return fmt.Errorf("output %q lacks exec-out/exec-err", out)
		}
		return nil
	})
	f.step("deleting the pods leaves no reservation, veth, rule or CNI cache entry", false, func() error {
		info, err := c.ReadConflist()
		if err != nil {
			return err
		}
		if _, err := c.Kubectl(ctx, 60*time.Second, "delete", "deployment", "cnis-web", "cnis-client", "--wait=true"); err != nil {
			return err
		}
		if err := waitFor(ctx, 60*time.Second, 250*time.Millisecond, "pods gone from the API", func() (bool, error) {
			pods, err := c.Pods(ctx, "default", "app in (cnis-web,cnis-client)")
			return err == nil && len(pods) == 0, err
		}); err != nil {
			return err
		}
		ids := []string{st.webCID, st.clientCID}
		return waitFor(ctx, 60*time.Second, 500*time.Millisecond, "the pods' network state removed", func() (bool, error) {
			return leftovers(ctx, c, info, st.ips, ids)
		})
	})
}

// leftovers reports (as an error) any network state of the given pods still in the node.
func leftovers(ctx context.Context, c *Cluster, info conflistInfo, ips, ids []string) (bool, error) {
	var problems []string
	if res, err := c.Reservations(info); err != nil {
		return false, err
	} else if len(res) > 0 {
		problems = append(problems, fmt.Sprintf("reservations %v in %s/%s", res, info.DataDir, info.Name))
	}
	if v, err := c.Veths(ctx); err != nil {
		return false, err
	} else if len(v) > 0 {
		problems = append(problems, fmt.Sprintf("veths %v", v))
	}
	entries, err := c.CNICache()
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if slices.Contains(ids, e.ContainerID) || e.Arg("K8S_POD_NAMESPACE") == "default" {
			problems = append(problems, "CNI cache entry "+e.File)
		}
	}
	nf, err := c.Netfilter(ctx)
	if err != nil {
		return false, err
	}
	for _, l := range splitLines(nf) {
		for _, s := range append(append([]string{}, ips...), ids...) {
			if s != "" && containsToken(l, s) {
				problems = append(problems, "rule: "+strings.TrimSpace(l))
			}
		}
	}
	if len(problems) > 0 {
		return false, errors.New(strings.Join(problems, "; "))
	}
	return true, nil
}

// containsToken is true when s occurs in l not as part of a longer IP or hex ID.
func containsToken(l, s string) bool {
	for i := 0; ; {
		j := strings.Index(l[i:], s)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(s)
		before := j == 0 || !isTokenChar(l[j-1])
		after := end == len(l) || !isTokenChar(l[end])
		if before && after {
			return true
		}
		i = j + 1
	}
}

func isTokenChar(b byte) bool {
	return b == '.' || b >= '0' && b <= '9' || b >= 'a' && b <= 'f' || b >= 'A' && b <= 'F'
}

func describePods(pods []podObj) string {
	var s []string
	for _, p := range pods {
		s = append(s, fmt.Sprintf("%s %s ready=%v ip=%s", p.Metadata.Name, p.Status.Phase, p.Ready(), p.Status.PodIP))
	}
	if len(s) == 0 {
		return "none yet"
	}
	return strings.Join(s, ", ")
}
