// Command mkimage builds the suite's container image without a container engine: an OCI image
// archive (FROM scratch, the static binaries in /opt/cni-suite/bin, install-cni as entrypoint)
// that `ctr -n k8s.io images import` loads. `make image` runs it; deploy/Containerfile is the same
// image for buildah, podman or docker.
//
//	mkimage -o bin/cni-suite-image.tar -ref docker.io/cni-suite/cni-suite:dev -bin bin install-cni bridge ...
package main

import (
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/cni-suite/cni-suite/pkg/ociimage"
)

// ImageBinDir is where the binaries sit in the image; install-cni copies the plugins beside it.
const ImageBinDir = "/opt/cni-suite/bin"

var elfMachine = map[string]elf.Machine{
	"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "arm": elf.EM_ARM, "386": elf.EM_386,
	"ppc64le": elf.EM_PPC64, "s390x": elf.EM_S390, "riscv64": elf.EM_RISCV,
}

// checkBinary refuses what cannot run in a scratch image of that architecture.
func checkBinary(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: not an ELF binary: %w", path, err)
	}
	defer f.Close()
	if want, ok := elfMachine[arch]; ok && f.Machine != want {
		return fmt.Errorf("%s is built for %s, the image is %s (build with GOARCH=%s)", path, f.Machine, arch, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked: a scratch image has no libc (build with CGO_ENABLED=0)", path)
		}
	}
	return nil
}

func main() {
	out := flag.String("o", "", "output archive (required)")
	ref := flag.String("ref", "docker.io/cni-suite/cni-suite:dev", "image name")
	binDir := flag.String("bin", "bin", "directory holding the binaries named as arguments")
	arch := flag.String("arch", envOr("GOARCH", runtime.GOARCH), "image architecture")
	version := flag.String("version", "dev", "value of the org.opencontainers.image.version label")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: mkimage -o OUT.tar [-ref NAME:TAG] [-bin DIR] [-arch ARCH] BINARY...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(*out, *ref, *binDir, *arch, *version, flag.Args()); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(out, ref, binDir, arch, version string, names []string) error {
	if out == "" || len(names) == 0 {
		return errors.New("need -o and at least one binary (see -h)")
	}
	im := ociimage.Image{
		Ref: ref, OS: "linux", Arch: arch,
		Entrypoint: []string{ImageBinDir + "/install-cni"},
		Labels: map[string]string{
			"org.opencontainers.image.title":   "cni-suite",
			"org.opencontainers.image.version": version,
		},
	}
	// SOURCE_DATE_EPOCH (reproducible-builds.org) dates the image; without it the date is left out.
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		sec, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		im.Created = time.Unix(sec, 0).UTC()
	}
	for _, n := range names {
		p := filepath.Join(binDir, n)
		if err := checkBinary(p, arch); err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		im.Files = append(im.Files, ociimage.File{Path: ImageBinDir + "/" + n, Mode: 0o755, Data: data})
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".mkimage-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	digest, err := im.WriteArchive(f)
	if err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return err
	}
	full, _, _ := ociimage.NormalizeRef(ref)
	fmt.Printf("%s: image %s (%s, linux/%s, %d binaries)\n", out, full, digest, arch, len(names))
	return nil
}
