package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestNormalizeRef(t *testing.T) {
	cases := []struct{ in, full, tag, err string }{
		{"cni-suite/cni-suite:dev", "docker.io/cni-suite/cni-suite:dev", "dev", ""},
		{"busybox", "docker.io/library/busybox:latest", "latest", ""},
		{"docker.io/cni-suite/cni-suite:v1.2.3", "docker.io/cni-suite/cni-suite:v1.2.3", "v1.2.3", ""},
		{"localhost:5000/x/y:1", "localhost:5000/x/y:1", "1", ""},
		{"registry.example.com/team/img", "registry.example.com/team/img:latest", "latest", ""},
		{"localhost/img:t", "localhost/img:t", "t", ""},
		{"Upper/Case:1", "", "", "not a valid"},
		{"x:bad tag", "", "", "not a valid"},
		{"x@sha256:abcd", "", "", "digests"},
		{"", "", "", "not a valid"},
	}
	for _, c := range cases {
		full, tag, err := NormalizeRef(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("NormalizeRef(%q) err = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || full != c.full || tag != c.tag {
			t.Errorf("NormalizeRef(%q) = %q, %q, %v; want %q, %q", c.in, full, tag, err, c.full, c.tag)
		}
	}
}

func testImage() Image {
	return Image{
		Ref: "cni-suite/cni-suite:test", OS: "linux", Arch: "amd64",
		Entrypoint: []string{"/opt/cni-suite/bin/install-cni"},
		Labels:     map[string]string{"org.opencontainers.image.version": "test"},
		Files: []File{
			{Path: "/opt/cni-suite/bin/install-cni", Mode: 0o755, Data: []byte("installer bytes")},
			{Path: "opt/cni-suite/bin/bridge", Mode: 0o755, Data: bytes.Repeat([]byte("b"), 100000)},
			{Path: "etc/motd", Mode: 0o644, Data: []byte("hi\n")},
		},
	}
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// readArchive returns every regular file of a tar by name, failing on duplicates.
func readArchive(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if _, dup := out[h.Name]; dup {
			t.Fatalf("duplicate entry %s", h.Name)
		}
		data, _ := io.ReadAll(tr)
		out[h.Name] = data
	}
}

// The archive is a consistent OCI image layout: every descriptor points at a blob with that
// digest and size, the config's diff_id is the uncompressed layer's digest, the layer holds the
// files (owned by root, with their modes) and their directories; manifest.json agrees.
func TestArchiveIsAConsistentOCILayout(t *testing.T) {
	im := testImage()
	var buf bytes.Buffer
	mdigest, err := im.WriteArchive(&buf)
	if err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, buf.Bytes())
	blob := func(d Descriptor, mediaType string) []byte {
		t.Helper()
		if d.MediaType != mediaType {
			t.Errorf("descriptor media type %q, want %q", d.MediaType, mediaType)
		}
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
		if !ok {
			t.Fatalf("blob %s missing", d.Digest)
		}
		if digestOf(b) != d.Digest || int64(len(b)) != d.Size {
			t.Fatalf("blob %s: digest %s size %d, descriptor says size %d", d.Digest, digestOf(b), len(b), d.Size)
		}
		return b
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", files["oci-layout"])
	}
	var idx Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if idx.SchemaVersion != 2 || idx.MediaType != MediaTypeIndex || len(idx.Manifests) != 1 {
		t.Fatalf("index %+v", idx)
	}
	md := idx.Manifests[0]
	if md.Digest != mdigest {
		t.Errorf("index names %s, WriteArchive returned %s", md.Digest, mdigest)
	}
	if md.Annotations[AnnotationImageName] != "docker.io/cni-suite/cni-suite:test" || md.Annotations[AnnotationRefName] != "test" {
		t.Errorf("annotations %v", md.Annotations)
	}
	if md.Platform == nil || md.Platform.OS != "linux" || md.Platform.Architecture != "amd64" {
		t.Errorf("platform %+v", md.Platform)
	}
	var m Manifest
	if err := json.Unmarshal(blob(md, MediaTypeManifest), &m); err != nil {
		t.Fatal(err)
	}
	if m.SchemaVersion != 2 || len(m.Layers) != 1 {
		t.Fatalf("manifest %+v", m)
	}
	var cfg Config
	if err := json.Unmarshal(blob(m.Config, MediaTypeConfig), &cfg); err != nil {
		t.Fatal(err)
	}
	gz := blob(m.Layers[0], MediaTypeLayer)
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.RootFS.Type != "layers" ||
		len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != digestOf(layer) {
		t.Errorf("config %+v (layer diff id %s)", cfg, digestOf(layer))
	}
	if strings.Join(cfg.Config.Entrypoint, " ") != "/opt/cni-suite/bin/install-cni" || cfg.Config.Labels["org.opencontainers.image.version"] != "test" {
		t.Errorf("config.config %+v", cfg.Config)
	}
	if len(cfg.History) != 1 || cfg.Created != nil {
		t.Errorf("history %+v created %v", cfg.History, cfg.Created)
	}
	// The layer's entries, in order.
	var got []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(time.Unix(0, 0)) {
			t.Errorf("%s: uid %d gid %d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		got = append(got, h.Name+" "+fmtMode(h.Mode)+" "+digestOf(data)[7:15])
	}
	want := []string{
		"etc/ 755 e3b0c442", "etc/motd 644 " + digestOf([]byte("hi\n"))[7:15],
		"opt/ 755 e3b0c442", "opt/cni-suite/ 755 e3b0c442", "opt/cni-suite/bin/ 755 e3b0c442",
		"opt/cni-suite/bin/bridge 755 " + digestOf(bytes.Repeat([]byte("b"), 100000))[7:15],
		"opt/cni-suite/bin/install-cni 755 " + digestOf([]byte("installer bytes"))[7:15],
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("layer entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var dm []DockerManifestEntry
	if err := json.Unmarshal(files["manifest.json"], &dm); err != nil {
		t.Fatal(err)
	}
	if len(dm) != 1 || dm[0].Config != "blobs/sha256/"+strings.TrimPrefix(m.Config.Digest, "sha256:") ||
		len(dm[0].Layers) != 1 || dm[0].Layers[0] != "blobs/sha256/"+strings.TrimPrefix(m.Layers[0].Digest, "sha256:") ||
		strings.Join(dm[0].RepoTags, ",") != "docker.io/cni-suite/cni-suite:test" {
		t.Errorf("manifest.json %+v", dm)
	}
}

func fmtMode(m int64) string { return fmt.Sprintf("%o", m) }

func TestArchiveIsReproducible(t *testing.T) {
	var a, b bytes.Buffer
	im := testImage()
	if _, err := im.WriteArchive(&a); err != nil {
		t.Fatal(err)
	}
	im2 := testImage()
	// Same files in another order: same image.
	im2.Files[0], im2.Files[2] = im2.Files[2], im2.Files[0]
	if _, err := im2.WriteArchive(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the same image built twice differs")
	}
	im3 := testImage()
	im3.Files[1].Data = []byte("another bridge")
	var c bytes.Buffer
	im3.WriteArchive(&c)
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Error("different content, same archive")
	}
	im4 := testImage()
	im4.Created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var d bytes.Buffer
	if _, err := im4.WriteArchive(&d); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(d.String(), `"created":"2026-01-02T03:04:05Z"`) {
		t.Error("Created not in the config")
	}
}

func TestImageErrors(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Image)
		want string
	}{
		{"bad ref", func(im *Image) { im.Ref = "UPPER" }, "not a valid"},
		{"no arch", func(im *Image) { im.Arch = "" }, "architecture"},
		{"duplicate", func(im *Image) { im.Files = append(im.Files, File{Path: "/etc/motd", Data: []byte("x")}) }, "twice"},
		{"file is a dir", func(im *Image) { im.Files = append(im.Files, File{Path: "opt/cni-suite", Data: []byte("x")}) }, "both a file and a directory"},
		{"empty path", func(im *Image) { im.Files = append(im.Files, File{Path: "/", Data: []byte("x")}) }, "empty path"},
	}
	for _, c := range cases {
		im := testImage()
		c.mod(&im)
		if _, err := im.WriteArchive(io.Discard); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}
