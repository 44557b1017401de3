# nodeboot's entry points. `make` builds the build container (see images/README.md).
#
#   make                     the build container, nodeboot/build:$(VERSION)
#   make binary              the static musl binary ($(BINARY))
#   make render [ENV_FILE=F] F (default the example) -> build/<environment>/ignition/,
#                            where Terraform and `nodeboot up` read (dev build, no AWS SDK)
#   make test                the whole test suite (tests/run)
#   make ami                 the Flatcar AMI with nodeboot and the kubelet (packer)
#   make shell ENV_NAME=N    the build container on environment N (entrypoint.sh -e N)
#   make play                the build container on the playground play-$USER
#   make clean               removes out/ (never cargo's target directory, nor build/)

VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
IMAGE ?= nodeboot/build
DOCKER_BUILD_ARGS ?=

TARGET := x86_64-unknown-linux-musl
CARGO_TARGET_DIR ?= target
BINARY := $(CARGO_TARGET_DIR)/$(TARGET)/release/nodeboot

EXAMPLE := environments/example.tfvars
OUT := out
ENV_FILE ?= $(EXAMPLE)
# terraform/main.tf reads build/<environment>/ignition/<role>.ign.
RENDER_DIR = build/$(shell sed -n 's/^environment *= *"\(.*\)"$$/\1/p' $(ENV_FILE))/ignition

PACKER_TEMPLATE := images/ami/flatcar.pkr.hcl
PACKER_ARGS ?=

.DEFAULT_GOAL := image
.PHONY: image binary render test ami shell play clean

# No build starts while a checksum or base image digest is unpinned.
image:
	images/build/check-pins.sh images/build/Dockerfile $(DOCKER_BUILD_ARGS)
	docker build -f images/build/Dockerfile -t $(IMAGE):$(VERSION) \
	  --build-arg NODEBOOT_VERSION=$(VERSION) --build-arg NODEBOOT_COMMIT=$(COMMIT) \
	  $(DOCKER_BUILD_ARGS) .

binary:
	cargo build --release --locked --target $(TARGET)

render:
	cargo run --locked --no-default-features -- render --env $(ENV_FILE) --out $(RENDER_DIR)

test:
	tests/run

# Variables without a default (kubelet_sha512) come from PKR_VAR_<name> or PACKER_ARGS.
# nodeboot_sha256 is the binary's own, computed once it is built: the bake
# checks the upload against it and tags the AMI with it.
# The images it pulls are the environment's (ENV_FILE): `nodeboot images`.
ami: binary
	mkdir -p $(OUT)/ami
	$(BINARY) images --env $(ENV_FILE) >$(OUT)/ami/images.txt
	packer init $(PACKER_TEMPLATE)
	packer build -var nodeboot_binary=$(BINARY) -var nodeboot_sha256=$$(sha256sum $(BINARY) | cut -d' ' -f1) \
	  -var nodeboot_version=$(VERSION) -var nodeboot_commit=$(COMMIT) -var images_file=$(OUT)/ami/images.txt \
	  $(PACKER_ARGS) $(PACKER_TEMPLATE)

shell:
	NODEBOOT_IMAGE=$(IMAGE):$(VERSION) images/build/entrypoint.sh -e $(ENV_NAME)

play:
	NODEBOOT_IMAGE=$(IMAGE):$(VERSION) images/build/entrypoint.sh --play

clean:
	rm -rf $(OUT)
