package crishim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageService records image names without pulling anything: crishim's containers are host
// processes, so an image is only a name that clients expect to see again. The answers are
// consistent (a pulled or used image is listed, has a stable ID, and can be removed).
type imageService struct {
	runtimeapi.UnimplementedImageServiceServer

	path, fsDir string
	mu          sync.Mutex
	images      map[string]string // normalised name -> ID
}

func newImageService(path, fsDir string) (*imageService, error) {
	is := &imageService{path: path, fsDir: fsDir, images: map[string]string{}}
	if err := readJSON(path, &is.images); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	return is, nil
}

// normalizeImage expands a reference as container runtimes do: docker.io/library/ for
// single names, docker.io/ for names without a registry, :latest without tag or digest.
func normalizeImage(ref string) string {
	ref = strings.TrimSpace(ref)
	if ref == "" || strings.HasPrefix(ref, "sha256:") {
		return ref
	}
	name := ref
	first, rest, hasSlash := strings.Cut(name, "/")
	if !hasSlash {
		name = "docker.io/library/" + name
	} else if !strings.ContainsAny(first, ".:") && first != "localhost" {
		name = "docker.io/" + first + "/" + rest
	}
	last := name[strings.LastIndex(name, "/")+1:]
	if !strings.Contains(last, ":") && !strings.Contains(name, "@") {
		name += ":latest"
	}
	return name
}

func imageID(name string) string {
	h := sha256.Sum256([]byte(name))
	return "sha256:" + hex.EncodeToString(h[:])
}

func (is *imageService) saveLocked() error { return writeJSON(is.path, is.images) }

// ensure records an image (as if pulled) and returns its ID.
func (is *imageService) ensure(ref string) string {
	name := normalizeImage(ref)
	if name == "" {
		return ""
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	if id, ok := is.images[name]; ok {
		return id
	}
	if strings.HasPrefix(name, "sha256:") {
		return name
	}
	id := imageID(name)
	is.images[name] = id
	_ = is.saveLocked()
	return id
}

// find resolves a name or an ID (or ID prefix) to the image's tags and ID.
func (is *imageService) find(ref string) (string, []string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	name := normalizeImage(ref)
	id, ok := is.images[name]
	if !ok {
		for n, i := range is.images {
			if i == ref || (len(ref) >= 12 && strings.HasPrefix(strings.TrimPrefix(i, "sha256:"), strings.TrimPrefix(ref, "sha256:"))) {
				id, ok = i, true
				_ = n
				break
			}
		}
	}
	if !ok {
		return "", nil
	}
	var tags []string
	for n, i := range is.images {
		if i == id {
			tags = append(tags, n)
		}
	}
	sort.Strings(tags)
	return id, tags
}

func toImage(id string, tags []string) *runtimeapi.Image {
	// Nothing is stored, but the Kubernetes CRI client rejects an image of size 0.
	return &runtimeapi.Image{Id: id, RepoTags: tags, Size: 1, Spec: &runtimeapi.ImageSpec{Image: id}}
}

func (is *imageService) list(f *runtimeapi.ImageFilter) []*runtimeapi.Image {
	is.mu.Lock()
	byID := map[string][]string{}
	for n, id := range is.images {
		byID[id] = append(byID[id], n)
	}
	is.mu.Unlock()
	var want string
	if f.GetImage().GetImage() != "" {
		want, _ = is.find(f.GetImage().GetImage())
		if want == "" {
			return nil
		}
	}
	var out []*runtimeapi.Image
	for id, tags := range byID {
		if want != "" && id != want {
			continue
		}
		sort.Strings(tags)
		out = append(out, toImage(id, tags))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RepoTags[0] < out[j].RepoTags[0] })
	return out
}

func (is *imageService) ListImages(ctx context.Context, req *runtimeapi.ListImagesRequest) (*runtimeapi.ListImagesResponse, error) {
	return &runtimeapi.ListImagesResponse{Images: is.list(req.GetFilter())}, nil
}

func (is *imageService) StreamImages(req *runtimeapi.StreamImagesRequest, stream grpc.ServerStreamingServer[runtimeapi.StreamImagesResponse]) error {
	return stream.Send(&runtimeapi.StreamImagesResponse{Images: is.list(req.GetFilter())})
}

// ImageStatus returns the image, or no image (not an error) when it is unknown, as the CRI asks.
func (is *imageService) ImageStatus(ctx context.Context, req *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	id, tags := is.find(req.GetImage().GetImage())
	if id == "" {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	resp := &runtimeapi.ImageStatusResponse{Image: toImage(id, tags)}
	if req.GetVerbose() {
		resp.Info = map[string]string{"info": "crishim records image names; nothing is pulled"}
	}
	return resp, nil
}

// PullImage records the name; nothing is downloaded.
func (is *imageService) PullImage(ctx context.Context, req *runtimeapi.PullImageRequest) (*runtimeapi.PullImageResponse, error) {
	ref := req.GetImage().GetImage()
	if strings.TrimSpace(ref) == "" {
		return nil, status.Error(codes.InvalidArgument, "image name is empty")
	}
	return &runtimeapi.PullImageResponse{ImageRef: is.ensure(ref)}, nil
}

// RemoveImage forgets an image; an unknown one is success.
func (is *imageService) RemoveImage(ctx context.Context, req *runtimeapi.RemoveImageRequest) (*runtimeapi.RemoveImageResponse, error) {
	id, _ := is.find(req.GetImage().GetImage())
	if id == "" {
		return &runtimeapi.RemoveImageResponse{}, nil
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	for n, i := range is.images {
		if i == id {
			delete(is.images, n)
		}
	}
	if err := is.saveLocked(); err != nil {
		return nil, status.Errorf(codes.Internal, "record images: %v", err)
	}
	return &runtimeapi.RemoveImageResponse{}, nil
}

// ImageFsInfo reports the filesystem of the state dir (images take no space).
func (is *imageService) ImageFsInfo(ctx context.Context, req *runtimeapi.ImageFsInfoRequest) (*runtimeapi.ImageFsInfoResponse, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(is.fsDir, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "statfs %s: %v", is.fsDir, err)
	}
	used := (st.Blocks - st.Bfree) * uint64(st.Bsize)
	fs := &runtimeapi.FilesystemUsage{
		Timestamp:  time.Now().UnixNano(),
		FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: is.fsDir},
		UsedBytes:  &runtimeapi.UInt64Value{Value: used},
		InodesUsed: &runtimeapi.UInt64Value{Value: st.Files - st.Ffree},
	}
	return &runtimeapi.ImageFsInfoResponse{ImageFilesystems: []*runtimeapi.FilesystemUsage{fs}, ContainerFilesystems: []*runtimeapi.FilesystemUsage{fs}}, nil
}
