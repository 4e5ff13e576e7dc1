// Package ociimage assembles a single-layer container image from a few files, without a container
// engine, as an OCI image layout in a tar archive (with a Docker-style manifest.json beside it).
// containerd's `ctr images import`, `docker load` and `skopeo copy oci-archive:` read it. The same
// input always gives the same bytes: file times are fixed and entries are sorted.
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
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image spec (v1.0) and containerd.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	// AnnotationRefName is the OCI tag annotation in index.json.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is the full image name containerd's importer takes the image's name from.
	AnnotationImageName = "io.containerd.image.name"
)

// File is one regular file of the image.
type File struct {
	Path string      // inside the image, e.g. "opt/cni-suite/bin/bridge" (a leading "/" is dropped)
	Mode fs.FileMode // permission bits
	Data []byte
}

// Image describes the image to build.
type Image struct {
	Ref        string // image name, e.g. "docker.io/cni-suite/cni-suite:dev" (normalized with NormalizeRef)
	OS, Arch   string // "linux", "amd64"
	Entrypoint []string
	Labels     map[string]string
	Files      []File
	// Created is written into the config and used as every file's mtime; zero leaves it out of the
	// config and uses the Unix epoch, so the output depends on the files alone.
	Created time.Time
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Platform is a descriptor's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Manifest is an OCI image manifest.
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// Index is an OCI image index (index.json).
type Index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []Descriptor `json:"manifests"`
}

// Config is the OCI image configuration.
type Config struct {
	Created      *time.Time `json:"created,omitempty"`
	Architecture string     `json:"architecture"`
	OS           string     `json:"os"`
	Config       struct {
		Entrypoint []string          `json:"Entrypoint,omitempty"`
		Labels     map[string]string `json:"Labels,omitempty"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
	History []struct {
		CreatedBy string `json:"created_by"`
	} `json:"history"`
}

// DockerManifestEntry is one element of a Docker archive's manifest.json.
type DockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

var (
	pathComponent = `[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*`
	repoRE        = regexp.MustCompile(`^` + pathComponent + `(?:/` + pathComponent + `)*$`)
	tagRE         = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	domainRE      = regexp.MustCompile(`^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$`)
)

// NormalizeRef turns an image reference into the full form runtimes use ("cni-suite/x:1" →
// "docker.io/cni-suite/x:1", "busybox" → "docker.io/library/busybox:latest"), and also returns
// the tag. Digest references are not accepted: the image is named by tag.
func NormalizeRef(ref string) (full, tag string, err error) {
	if strings.Contains(ref, "@") {
		return "", "", fmt.Errorf("image reference %q: digests are not supported, name it by tag", ref)
	}
	name, tag := ref, "latest"
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		name, tag = ref[:i], ref[i+1:]
	}
	domain, rest := "docker.io", name
	if i := strings.Index(name, "/"); i >= 0 {
		if first := name[:i]; strings.ContainsAny(first, ".:") || first == "localhost" || strings.HasPrefix(first, "[") {
			domain, rest = first, name[i+1:]
		}
	}
	if domain == "docker.io" && !strings.Contains(rest, "/") {
		rest = "library/" + rest
	}
	if !domainRE.MatchString(domain) || !repoRE.MatchString(rest) || !tagRE.MatchString(tag) {
		return "", "", fmt.Errorf("image reference %q: not a valid name[:tag] (lowercase repository path, tag of letters, digits, '_', '.', '-')", ref)
	}
	return domain + "/" + rest + ":" + tag, tag, nil
}

type blob struct {
	digest string
	data   []byte
}

func newBlob(b []byte) blob {
	s := sha256.Sum256(b)
	return blob{digest: "sha256:" + hex.EncodeToString(s[:]), data: b}
}

func (b blob) path() string { return "blobs/sha256/" + strings.TrimPrefix(b.digest, "sha256:") }

func (b blob) desc(mediaType string) Descriptor {
	return Descriptor{MediaType: mediaType, Digest: b.digest, Size: int64(len(b.data))}
}

// Layer returns the image's single layer as an uncompressed tar: every parent directory (0755)
// and file, sorted, owned by root, with the fixed mtime.
func (im *Image) Layer() ([]byte, error) {
	mtime := im.mtime()
	files := map[string]File{}
	dirs := map[string]bool{}
	for _, f := range im.Files {
		p := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if p == "" || p == "." {
			return nil, fmt.Errorf("image file %q: empty path", f.Path)
		}
		if _, dup := files[p]; dup {
			return nil, fmt.Errorf("image file %q given twice", p)
		}
		f.Path = p
		files[p] = f
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for p := range files {
		if dirs[p] {
			return nil, fmt.Errorf("image path %q is both a file and a directory", p)
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d+"/")
	}
	for p := range files {
		names = append(names, p)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		h := &tar.Header{Name: n, ModTime: mtime, Uid: 0, Gid: 0, Format: tar.FormatPAX}
		if strings.HasSuffix(n, "/") {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		} else {
			f := files[n]
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, int64(f.Mode.Perm()), int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(files[n].Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (im *Image) mtime() time.Time {
	if im.Created.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return im.Created.UTC()
}

// WriteArchive writes the image as a tar archive holding an OCI image layout (oci-layout,
// index.json, blobs/sha256/...) and a Docker manifest.json, and returns the manifest's digest.
func (im *Image) WriteArchive(w io.Writer) (string, error) {
	full, tag, err := NormalizeRef(im.Ref)
	if err != nil {
		return "", err
	}
	if im.OS == "" || im.Arch == "" {
		return "", fmt.Errorf("image needs an OS and an architecture")
	}
	layerTar, err := im.Layer()
	if err != nil {
		return "", err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return "", err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	layer := newBlob(gz.Bytes())
	diffID := newBlob(layerTar).digest

	var cfg Config
	if !im.Created.IsZero() {
		c := im.Created.UTC()
		cfg.Created = &c
	}
	cfg.Architecture, cfg.OS = im.Arch, im.OS
	cfg.Config.Entrypoint, cfg.Config.Labels = im.Entrypoint, im.Labels
	cfg.RootFS.Type, cfg.RootFS.DiffIDs = "layers", []string{diffID}
	cfg.History = append(cfg.History, struct {
		CreatedBy string `json:"created_by"`
	}{"cni-suite mkimage: " + strings.Join(im.paths(), " ")})
	cfgBytes, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	config := newBlob(cfgBytes)

	mf, err := json.Marshal(Manifest{SchemaVersion: 2, MediaType: MediaTypeManifest,
		Config: config.desc(MediaTypeConfig), Layers: []Descriptor{layer.desc(MediaTypeLayer)}})
	if err != nil {
		return "", err
	}
	manifest := newBlob(mf)
	md := manifest.desc(MediaTypeManifest)
	md.Platform = &Platform{Architecture: im.Arch, OS: im.OS}
	md.Annotations = map[string]string{AnnotationImageName: full, AnnotationRefName: tag}
	index, err := json.Marshal(Index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{md}})
	if err != nil {
		return "", err
	}
	docker, err := json.Marshal([]DockerManifestEntry{{Config: config.path(), RepoTags: []string{full}, Layers: []string{layer.path()}}})
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	mtime := im.mtime()
	entry := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return "", err
		}
	}
	blobs := []blob{config, layer, manifest}
	sort.Slice(blobs, func(i, j int) bool { return blobs[i].digest < blobs[j].digest })
	for _, b := range blobs {
		if err := entry(b.path(), b.data); err != nil {
			return "", err
		}
	}
	for _, e := range []struct {
		name string
		data []byte
	}{{"index.json", index}, {"manifest.json", docker}, {"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)}} {
		if err := entry(e.name, e.data); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	return manifest.digest, nil
}

func (im *Image) paths() []string {
	var p []string
	for _, f := range im.Files {
		p = append(p, "/"+strings.TrimPrefix(f.Path, "/"))
	}
	sort.Strings(p)
	return p
}
