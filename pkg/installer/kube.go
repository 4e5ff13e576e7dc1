package installer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// The service account files every pod gets (client-go's in-cluster config reads the same).
const (
	DefaultTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// KubeOptions says how to reach the API server.
type KubeOptions struct {
	// APIServer overrides the address: the network installer often runs before anything routes
	// the kubernetes Service's ClusterIP (no kube-proxy yet, or none at all), so a cluster can
	// point it at the API server directly ("https://10.0.0.1:6443", or "10.0.0.1:6443").
	APIServer  string
	Kubeconfig string // a kubeconfig file, for running on a node by hand; else in-cluster
	TokenFile  string // DefaultTokenFile when empty
	CAFile     string // DefaultCAFile when empty
	UserAgent  string
}

// RESTConfig builds the client config: from the kubeconfig when given (APIServer still
// overriding its server), otherwise the in-cluster one: the service account's token and CA, and
// the address from APIServer or else from KUBERNETES_SERVICE_HOST/PORT.
func RESTConfig(o KubeOptions, getenv func(string) string) (*rest.Config, error) {
	server := ""
	if o.APIServer != "" {
		var err error
		if server, err = normalizeServer(o.APIServer); err != nil {
			return nil, err
		}
	}
	var cfg *rest.Config
	if o.Kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags(server, o.Kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", o.Kubeconfig, err)
		}
		cfg = c
	} else {
		if server == "" {
			host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
			if host == "" || port == "" {
				return nil, errors.New("no API server: not in a pod (KUBERNETES_SERVICE_HOST/PORT unset); give --api-server, --kubeconfig or --pod-cidr")
			}
			server = "https://" + net.JoinHostPort(host, port)
		}
		tokenFile, caFile := o.TokenFile, o.CAFile
		if tokenFile == "" {
			tokenFile = DefaultTokenFile
		}
		if caFile == "" {
			caFile = DefaultCAFile
		}
		token, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("service account token: %w", err)
		}
		if _, err := os.Stat(caFile); err != nil {
			return nil, fmt.Errorf("service account CA: %w", err)
		}
		cfg = &rest.Config{
			Host:            server,
			BearerToken:     strings.TrimSpace(string(token)),
			BearerTokenFile: tokenFile, // re-read as the kubelet rotates it
			TLSClientConfig: rest.TLSClientConfig{CAFile: caFile},
		}
	}
	cfg.UserAgent = o.UserAgent
	return cfg, nil
}

// normalizeServer accepts "host:port", "https://host:port" or "http://host:port".
func normalizeServer(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", fmt.Errorf("api server %q: want https://host:port or host:port", s)
	}
	return s, nil
}

// NodePodCIDRs returns a Node's pod CIDRs: spec.podCIDRs, else the older single spec.podCIDR.
func NodePodCIDRs(n *corev1.Node) []string {
	if len(n.Spec.PodCIDRs) > 0 {
		return n.Spec.PodCIDRs
	}
	if n.Spec.PodCIDR != "" {
		return []string{n.Spec.PodCIDR}
	}
	return nil
}

// WatchNodeCIDRs calls fn with the pod CIDRs of the named Node each time the Node is seen: when
// first listed, on every change and on every resync (so a deleted config is put back). It needs
// only list and watch on nodes, narrowed to this node by a field selector. It returns when ctx
// ends; fn runs on one goroutine at a time.
func WatchNodeCIDRs(ctx context.Context, client kubernetes.Interface, node string, resync time.Duration, fn func(cidrs []string)) error {
	if node == "" {
		return errors.New("no node name: set NODE_NAME from the downward API (spec.nodeName) or give --node-name")
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = "metadata.name=" + node
		}))
	inf := f.Core().V1().Nodes().Informer()
	handle := func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok || n.Name != node {
			return
		}
		fn(NodePodCIDRs(n))
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	<-ctx.Done()
	f.Shutdown()
	return nil
}
