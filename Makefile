# cni-suite: drop-in replacements for the reference CNI plugins bridge, host-local, portmap, loopback.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GOARCH    ?= $(shell $(GO) env GOARCH)
MODULE    := github.com/cni-suite/cni-suite
LDFLAGS   := -s -w -X $(MODULE)/pkg/buildinfo.Version=$(VERSION)
# The release plugins: the four reference type names, those that exist in this tree.
PLUGINS   := $(notdir $(wildcard $(addprefix plugins/,bridge host-local portmap loopback)))
# Everything make build produces (plugins plus test/deploy tools, when present).
CMDS      := $(wildcard plugins/* test/crishim deploy/install-cni)
DESTDIR   ?=
PREFIX    ?= /opt/cni/bin
CONFDIR   ?= /etc/cni/net.d
RELEASE   := cni-plugins-linux-$(GOARCH)-$(VERSION).tgz
# make image: the DaemonSet's image (deploy/daemonset.yaml names IMAGE), an OCI archive built
# without a container engine; load it with `ctr -n k8s.io images import $(IMAGE_TAR)`.
IMAGE     ?= docker.io/cni-suite/cni-suite:dev
IMAGE_TAR ?= bin/cni-suite-image.tar

.PHONY: all build test demo e2e e2e-k8s bench install release clean deps image

all: build

build:
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./,$(CMDS))

deps:
	scripts/deps.sh

# The test command of the README and CI: unit tests, netns integration tests (root), conformance
# against the reference plugins, short fuzz runs, and the root-netns-untouched check.
test: deps build
	scripts/test.sh

demo: deps build
	scripts/demo.sh

e2e: deps build image
	scripts/e2e.sh
	scripts/e2e-k8s.sh

# A real control plane and kubelet (containerd with the DaemonSet from deploy/ and the image,
# then the CRI shim) in throwaway namespaces; builds the Kubernetes components once into
# ~/.cache/cni-suite (minutes when cold).
e2e-k8s: deps build image
	scripts/e2e-k8s.sh

bench: deps build
	scripts/bench.sh

# Installs the four plugin binaries; INSTALL_CONF=1 also puts the example conflist in $(CONFDIR).
install: build
	install -d $(DESTDIR)$(PREFIX)
	install -m 0755 $(addprefix bin/,$(PLUGINS)) $(DESTDIR)$(PREFIX)/
	@if [ "$(INSTALL_CONF)" = 1 ]; then \
		install -d $(DESTDIR)$(CONFDIR) && \
		install -m 0644 deploy/examples/10-cni-suite.conflist $(DESTDIR)$(CONFDIR)/ && \
		echo "installed $(DESTDIR)$(CONFDIR)/10-cni-suite.conflist"; fi

release: build
	@mkdir -p dist
	tar -C bin -czf dist/$(RELEASE) $(addprefix ./,$(PLUGINS))
	cd dist && sha256sum $(RELEASE) > $(RELEASE).sha256
	@echo "dist/$(RELEASE)"

image: build
	CGO_ENABLED=0 $(GO) run ./deploy/mkimage -o $(IMAGE_TAR) -ref '$(IMAGE)' -arch $(GOARCH) -version $(VERSION) -bin bin install-cni $(PLUGINS)
	@echo "load it on a node: ctr -n k8s.io images import $(IMAGE_TAR)"

clean:
	rm -rf bin dist
