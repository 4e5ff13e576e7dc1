package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPKIChainsAndSANs(t *testing.T) {
	p, err := NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := p.Issue(CertSpec{Name: "apiserver", CN: "kube-apiserver", Server: true,
		DNS: []string{"kubernetes"}, IPs: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(nodeIP)}})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := p.Issue(CertSpec{Name: "admin", CN: "admin", Orgs: []string{"system:masters"}, Client: true})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(p.CACert)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA PEM does not parse")
	}
	tests := []struct {
		pair  Pair
		host  string
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{srv, nodeIP, x509.ExtKeyUsageServerAuth, true},
		{srv, "127.0.0.1", x509.ExtKeyUsageServerAuth, true},
		{srv, "kubernetes", x509.ExtKeyUsageServerAuth, true},
		{srv, "10.9.9.9", x509.ExtKeyUsageServerAuth, false},
		{srv, "", x509.ExtKeyUsageClientAuth, false},
		{cli, "", x509.ExtKeyUsageClientAuth, true},
		{cli, "", x509.ExtKeyUsageServerAuth, false},
	}
	for _, tc := range tests {
		kp, err := tls.LoadX509KeyPair(tc.pair.Cert, tc.pair.Key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(kp.Certificate[0])
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: tc.host, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
		if (err == nil) != tc.ok {
			t.Errorf("%s host %q usage %v: verify err %v, want ok=%v", leaf.Subject.CommonName, tc.host, tc.usage, err, tc.ok)
		}
	}
	if fi, _ := os.Stat(cli.Key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestImageArchiveIsConsistentOCILayout(t *testing.T) {
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Skip("busybox-static not installed (scripts/k8s-deps.sh installs it)")
	}
	path := filepath.Join(t.TempDir(), "img.tar")
	if err := WriteImageArchive(path, bb, testImages()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	for name, b := range files {
		if hexd, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
			sum := sha256.Sum256(b)
			if hex.EncodeToString(sum[:]) != hexd {
				t.Errorf("blob %s has digest %x", name, sum)
			}
		}
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 2 {
		t.Fatalf("%d manifests, want 2", len(index.Manifests))
	}
	for _, m := range index.Manifests {
		blob, ok := files["blobs/sha256/"+strings.TrimPrefix(m.Digest, "sha256:")]
		if !ok || int64(len(blob)) != m.Size {
			t.Fatalf("manifest %s missing or wrong size", m.Digest)
		}
		var man struct {
			Layers []descriptor `json:"layers"`
		}
		if err := json.Unmarshal(blob, &man); err != nil {
			t.Fatal(err)
		}
		layer := files["blobs/sha256/"+strings.TrimPrefix(man.Layers[0].Digest, "sha256:")]
		var names []string
		lr := tar.NewReader(bytes.NewReader(layer))
		for {
			h, err := lr.Next()
			if err != nil {
				break
			}
			names = append(names, h.Name)
		}
		for _, want := range []string{"bin/busybox", "bin/sh", "bin/httpd", "bin/wget", "tmp/"} {
			if !contains(names, want) {
				t.Errorf("layer lacks %s", want)
			}
		}
		if m.Annotations["io.containerd.image.name"] == "" {
			t.Errorf("manifest %s has no image name", m.Digest)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestSnapshotDiff(t *testing.T) {
	a := Snapshot{"links": {"1: lo", "2: eth0"}, "nft": {"x", "x"}}
	tests := []struct {
		name string
		b    Snapshot
		want []string
	}{
		{"equal", Snapshot{"links": {"1: lo", "2: eth0"}, "nft": {"x", "x"}}, nil},
		{"added link", Snapshot{"links": {"1: lo", "2: eth0", "3: cni0"}, "nft": {"x", "x"}}, []string{"links: + 3: cni0"}},
		{"removed duplicate", Snapshot{"links": {"1: lo", "2: eth0"}, "nft": {"x"}}, []string{"nft: - x"}},
		{"new section", Snapshot{"links": {"1: lo", "2: eth0"}, "nft": {"x", "x"}, "rules": {"r"}}, []string{"rules: + r"}},
	}
	for _, tc := range tests {
		got := a.Diff(tc.b)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%s: diff %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestContainsToken(t *testing.T) {
	tests := []struct {
		line, tok string
		want      bool
	}{
		{"-A POSTROUTING -s 10.244.0.5/32 -j CNI-abc", "10.244.0.5", true},
		{"-A POSTROUTING -s 10.244.0.50/32 -j CNI-abc", "10.244.0.5", false},
		{"-A X -s 110.244.0.5/32", "10.244.0.5", false},
		{`comment "name: \"n\" id: \"abc123\""`, "abc123", true},
		{`id: "abc1234"`, "abc123", false},
		{"", "x", false},
	}
	for _, tc := range tests {
		if got := containsToken(tc.line, tc.tok); got != tc.want {
			t.Errorf("containsToken(%q, %q) = %v", tc.line, tc.tok, got)
		}
	}
}

func TestRenderConflist(t *testing.T) {
	b, err := renderConflist("10.244.3.0/24")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		CNIVersion  string   `json:"cniVersion"`
		CNIVersions []string `json:"cniVersions"`
		Plugins     []struct {
			Type        string `json:"type"`
			HairpinMode bool   `json:"hairpinMode"`
			IPAM        struct {
				Ranges [][]struct {
					Subnet string `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
			Capabilities map[string]bool `json:"capabilities"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	if c.CNIVersion != "1.0.0" || strings.Join(c.CNIVersions, ",") != "1.0.0,1.1.0" {
		t.Errorf("versions %q %q", c.CNIVersion, c.CNIVersions)
	}
	if len(c.Plugins) != 2 || c.Plugins[0].Type != "bridge" || c.Plugins[1].Type != "portmap" {
		t.Fatalf("plugins %+v", c.Plugins)
	}
	if !c.Plugins[0].HairpinMode || c.Plugins[0].IPAM.Ranges[0][0].Subnet != "10.244.3.0/24" {
		t.Errorf("bridge %+v", c.Plugins[0])
	}
	if !c.Plugins[1].Capabilities["portMappings"] {
		t.Error("portmap lacks the portMappings capability")
	}
}

func TestReportSummaryAndFlow(t *testing.T) {
	var out bytes.Buffer
	r := &Report{out: &out}
	f := &flow{runtime: "rt", rep: r}
	f.step("ok", true, func() error { return nil })
	f.step("breaks", true, func() error { return errors.New("boom") })
	ran := false
	f.step("after", false, func() error { ran = true; return nil })
	f.skip("n/a", "not built")
	if ran {
		t.Error("a step ran after a critical failure")
	}
	s := r.Summary()
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if last := lines[len(lines)-1]; last != "1 passed, 2 failed, 1 skipped" {
		t.Errorf("last line %q", last)
	}
	if !strings.Contains(out.String(), `FAIL after (0s): not run: "breaks" failed`) {
		t.Errorf("progress output:\n%s", out.String())
	}
	r2 := &Report{out: io.Discard}
	r2.Add(Result{Runtime: "x", Check: "y", Dur: time.Second})
	if lines := strings.Split(strings.TrimSpace(r2.Summary()), "\n"); lines[len(lines)-1] != "1 passed, 0 failed" {
		t.Errorf("summary %q", r2.Summary())
	}
}

func TestWorkloadManifestQuotesCommands(t *testing.T) {
	m := workloadManifest(busyboxImage, "/tmp/www")
	for _, want := range []string{"hostPort: 30080", "imagePullPolicy: Never", `"/bin/busybox", "sh", "-c", "mkdir -p /tmp/www`, "name: cnis-client"} {
		if !strings.Contains(m, want) {
			t.Errorf("manifest lacks %q:\n%s", want, m)
		}
	}
}
