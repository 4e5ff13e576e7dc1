// Package deploy holds the Kubernetes manifests and the image recipe; its test checks them.
package deploy

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/cni-suite/cni-suite/pkg/installer"
)

const installCNI = "/opt/cni-suite/bin/install-cni" // where the image has it (deploy/mkimage, Containerfile)

// strict decodes with the Kubernetes API types; unknown or duplicate fields are errors.
var strict = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// decodeFile decodes every document of a manifest file.
func decodeFile(t *testing.T, path string) []runtime.Object {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return objs
}

func decodeAll(b []byte) ([]runtime.Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			return nil, err
		}
		obj, _, err := strict.Decode(js, nil, nil)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l...)
		}
	}
	return out
}

// The strict decoder really is strict: a misspelt field fails (so the check below can fail).
func TestStrictDecodingRejectsUnknownFields(t *testing.T) {
	b, _ := os.ReadFile("daemonset.yaml")
	for _, mutate := range []func([]byte) []byte{
		func(b []byte) []byte {
			return bytes.Replace(b, []byte("hostNetwork: true"), []byte("hostNetwrok: true"), 1)
		},
		func(b []byte) []byte {
			return bytes.Replace(b, []byte("      hostNetwork: true"), []byte("      hostNetwork: true\n      hostNetwork: false"), 1)
		},
		func(b []byte) []byte {
			return bytes.Replace(b, []byte("maxUnavailable: 1"), []byte("maxUnavailable: {}"), 1)
		},
	} {
		if _, err := decodeAll(mutate(b)); err == nil {
			t.Error("a broken manifest decoded without error")
		}
	}
}

func findDS(t *testing.T, objs []runtime.Object, name string) *appsv1.DaemonSet {
	t.Helper()
	for _, o := range objs {
		if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == name {
			return ds
		}
	}
	t.Fatalf("no DaemonSet %s", name)
	return nil
}

// makefileImage is the IMAGE default of the Makefile: `make image` names the image the manifests use.
func makefileImage(t *testing.T) string {
	b, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no IMAGE ?= in the Makefile")
	}
	return string(m[1])
}

// checkPodBasics: what both DaemonSets need to run on every Linux node before any network exists,
// with least privilege, and with command lines install-cni accepts.
func checkPodBasics(t *testing.T, ds *appsv1.DaemonSet, image string) {
	t.Helper()
	s := ds.Spec.Template.Spec
	if ds.Namespace != "kube-system" {
		t.Errorf("%s: namespace %q", ds.Name, ds.Namespace)
	}
	if !s.HostNetwork {
		t.Errorf("%s: not hostNetwork", ds.Name)
	}
	if s.PriorityClassName != "system-node-critical" {
		t.Errorf("%s: priorityClassName %q", ds.Name, s.PriorityClassName)
	}
	if s.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("%s: nodeSelector %v", ds.Name, s.NodeSelector)
	}
	if !slices.ContainsFunc(s.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("%s: does not tolerate every taint: %+v", ds.Name, s.Tolerations)
	}
	if s.SecurityContext == nil || s.SecurityContext.SeccompProfile == nil || s.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: no RuntimeDefault seccomp profile", ds.Name)
	}
	for _, c := range append(append([]corev1.Container{}, s.InitContainers...), s.Containers...) {
		if c.Image != image {
			t.Errorf("%s/%s: image %q, want %q (the Makefile's IMAGE)", ds.Name, c.Name, c.Image, image)
		}
		if c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s/%s: imagePullPolicy %q (an imported image has no registry)", ds.Name, c.Name, c.ImagePullPolicy)
		}
		if len(c.Command) != 1 || c.Command[0] != installCNI {
			t.Errorf("%s/%s: command %v", ds.Name, c.Name, c.Command)
		}
		if err := installer.CheckArgs(c.Args); err != nil {
			t.Errorf("%s/%s: install-cni refuses args %q: %v", ds.Name, c.Name, c.Args, err)
		}
		sc := c.SecurityContext
		if sc == nil || (sc.Privileged != nil && *sc.Privileged) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
			!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s/%s: not least privilege: %+v", ds.Name, c.Name, sc)
		}
		if c.ReadinessProbe != nil && c.ReadinessProbe.Exec != nil {
			cmd := c.ReadinessProbe.Exec.Command
			if len(cmd) < 2 || cmd[0] != installCNI {
				t.Errorf("%s/%s: probe %v", ds.Name, c.Name, cmd)
			} else if err := installer.CheckArgs(cmd[1:]); err != nil {
				t.Errorf("%s/%s: probe args refused: %v", ds.Name, c.Name, err)
			}
		}
		// Every directory a flag names is mounted in that container.
		for i, a := range c.Args {
			if (a == "--dst" || a == "--conf-dir" || a == "--bin-dir") && i+1 < len(c.Args) {
				if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == c.Args[i+1] }) {
					t.Errorf("%s/%s: %s %s is not a volume mount", ds.Name, c.Name, a, c.Args[i+1])
				}
			}
		}
	}
}

func arg(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

func hostPaths(s corev1.PodSpec) map[string]string {
	out := map[string]string{}
	for _, v := range s.Volumes {
		if v.HostPath == nil {
			out[v.Name] = "(not a hostPath)"
			continue
		}
		out[v.Name] = v.HostPath.Path
	}
	return out
}

func TestInstallManifest(t *testing.T) {
	objs := decodeFile(t, "daemonset.yaml")
	image := makefileImage(t)
	ds := findDS(t, objs, "cni-suite")
	checkPodBasics(t, ds, image)
	s := ds.Spec.Template.Spec

	u := ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable == nil ||
		u.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("updateStrategy %+v, want RollingUpdate maxUnavailable 1", u)
	}
	if got := hostPaths(s); len(got) != 3 || got["cni-bin"] != "/opt/cni/bin" || got["cni-conf"] != "/etc/cni/net.d" || got["ipam"] != "/run/cni-suite" {
		t.Errorf("volumes %v", got)
	}
	if len(s.InitContainers) != 1 || len(s.InitContainers[0].Args) == 0 || s.InitContainers[0].Args[0] != "bins" {
		t.Fatalf("init containers %+v, want one running bins", s.InitContainers)
	}
	if len(s.Containers) != 1 || len(s.Containers[0].Args) == 0 || s.Containers[0].Args[0] != "config" {
		t.Fatalf("containers %+v, want one running config", s.Containers)
	}
	for _, c := range append(s.InitContainers, s.Containers...) {
		if c.SecurityContext.Capabilities.Add != nil {
			t.Errorf("%s adds capabilities %v: installing needs none", c.Name, c.SecurityContext.Capabilities.Add)
		}
	}
	cfg := s.Containers[0]
	// The IPAM dir the config names is the one mounted under --host-root.
	dataDir, hostRoot := arg(cfg.Args, "--data-dir"), arg(cfg.Args, "--host-root")
	if !strings.HasPrefix(dataDir, "/run/cni-suite/") || !slices.ContainsFunc(cfg.VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == "ipam" && m.MountPath == hostRoot+"/run/cni-suite"
	}) {
		t.Errorf("data dir %q / host root %q do not match the ipam mount %+v", dataDir, hostRoot, cfg.VolumeMounts)
	}
	if cfg.ReadinessProbe == nil || cfg.ReadinessProbe.Exec == nil || cfg.ReadinessProbe.Exec.Command[1] != "ready" ||
		arg(cfg.ReadinessProbe.Exec.Command, "--conf-dir") != arg(cfg.Args, "--conf-dir") {
		t.Errorf("readiness probe %+v does not check the config the container writes", cfg.ReadinessProbe)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range cfg.Env {
		env[e.Name] = e
	}
	if e := env[installer.EnvNodeName]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("%s not from the downward API: %+v", installer.EnvNodeName, e)
	}
	if _, ok := env[installer.EnvAPIServer]; !ok {
		t.Errorf("no %s to point the installer at the API server", installer.EnvAPIServer)
	}
	if ds.Spec.Template.Spec.ServiceAccountName != "cni-suite" {
		t.Errorf("serviceAccountName %q", s.ServiceAccountName)
	}

	// RBAC: the service account exists, and may get/list/watch nodes, nothing else.
	var sa *corev1.ServiceAccount
	var role *rbacv1.ClusterRole
	var binding *rbacv1.ClusterRoleBinding
	for _, o := range objs {
		switch v := o.(type) {
		case *corev1.ServiceAccount:
			sa = v
		case *rbacv1.ClusterRole:
			role = v
		case *rbacv1.ClusterRoleBinding:
			binding = v
		case *appsv1.DaemonSet:
		default:
			t.Errorf("unexpected object %T", o)
		}
	}
	if sa == nil || role == nil || binding == nil {
		t.Fatalf("want a ServiceAccount, a ClusterRole and a ClusterRoleBinding: %v %v %v", sa, role, binding)
	}
	if sa.Name != s.ServiceAccountName || sa.Namespace != "kube-system" {
		t.Errorf("service account %s/%s", sa.Namespace, sa.Name)
	}
	if len(role.Rules) != 1 || !slices.Equal(role.Rules[0].APIGroups, []string{""}) || !slices.Equal(role.Rules[0].Resources, []string{"nodes"}) ||
		!slices.Equal(role.Rules[0].Verbs, []string{"get", "list", "watch"}) || role.Rules[0].ResourceNames != nil {
		t.Errorf("ClusterRole rules %+v, want get/list/watch nodes only", role.Rules)
	}
	if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != role.Name || len(binding.Subjects) != 1 ||
		binding.Subjects[0].Kind != "ServiceAccount" || binding.Subjects[0].Name != sa.Name || binding.Subjects[0].Namespace != sa.Namespace {
		t.Errorf("binding %+v", binding)
	}
}

// `kubectl apply -f deploy/` only installs: no manifest there uninstalls, and no preStop hook does
// (a rolling update must not leave a node without its config).
func TestApplyDeployDirOnlyInstalls(t *testing.T) {
	files, _ := filepath.Glob("*.y*ml")
	jsons, _ := filepath.Glob("*.json")
	files = append(files, jsons...)
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/")
	}
	for _, f := range files {
		for _, o := range decodeFile(t, f) {
			ds, ok := o.(*appsv1.DaemonSet)
			if !ok {
				continue
			}
			for _, c := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
				if slices.Contains(c.Args, "uninstall") {
					t.Errorf("%s: %s runs uninstall", f, c.Name)
				}
				if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
					t.Errorf("%s: %s has a preStop hook", f, c.Name)
				}
			}
		}
	}
}

func TestUninstallManifest(t *testing.T) {
	objs := decodeFile(t, "uninstall/uninstall.yaml")
	if len(objs) != 1 {
		t.Fatalf("%d objects, want one DaemonSet", len(objs))
	}
	ds := findDS(t, objs, "cni-suite-uninstall")
	checkPodBasics(t, ds, makefileImage(t))
	s := ds.Spec.Template.Spec
	if s.AutomountServiceAccountToken == nil || *s.AutomountServiceAccountToken {
		t.Error("the uninstaller needs no API access: automountServiceAccountToken should be false")
	}
	if len(s.InitContainers) != 1 || s.InitContainers[0].Args[0] != "uninstall" {
		t.Fatalf("init containers %+v, want one running uninstall", s.InitContainers)
	}
	if len(s.Containers) != 1 || !slices.Equal(s.Containers[0].Args, []string{"wait"}) {
		t.Errorf("main container %+v, want install-cni wait", s.Containers)
	}
	if got := hostPaths(s); len(got) != 2 || got["cni-bin"] != "/opt/cni/bin" || got["cni-conf"] != "/etc/cni/net.d" {
		t.Errorf("volumes %v", got)
	}
	// The same paths as the installer's.
	inst := findDS(t, decodeFile(t, "daemonset.yaml"), "cni-suite").Spec.Template.Spec
	un := s.InitContainers[0].Args
	if arg(un, "--dst") != arg(inst.InitContainers[0].Args, "--dst") || arg(un, "--conf-dir") != arg(inst.Containers[0].Args, "--conf-dir") {
		t.Errorf("uninstall args %v do not match the installer's dirs", un)
	}
	if sel, tl := ds.Spec.Selector.MatchLabels, findDS(t, decodeFile(t, "daemonset.yaml"), "cni-suite").Spec.Selector.MatchLabels; sel["app.kubernetes.io/name"] == tl["app.kubernetes.io/name"] {
		t.Error("the uninstall DaemonSet's selector overlaps the installer's")
	}
}

// deploy/Containerfile describes the image make image builds.
func TestContainerfileMatchesImage(t *testing.T) {
	b, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	var from, copyLine, entry string
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "FROM "):
			from = l
		case strings.HasPrefix(l, "COPY "):
			copyLine = l
		case strings.HasPrefix(l, "ENTRYPOINT "):
			entry = l
		}
	}
	if from != "FROM scratch" {
		t.Errorf("%q, want FROM scratch", from)
	}
	want := "COPY bin/install-cni"
	for _, p := range installer.DefaultPlugins {
		want += " bin/" + p
	}
	want += " " + filepath.Dir(installCNI) + "/"
	if copyLine != want {
		t.Errorf("%q, want %q", copyLine, want)
	}
	if entry != `ENTRYPOINT ["`+installCNI+`"]` {
		t.Errorf("%q", entry)
	}
}
