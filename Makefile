# carve: the two commands a newcomer needs are `make run` and `make test` (see README.md).
IMAGE_DIR ?= /var/lib/carve/images

.PHONY: run test setup images build lint bench

## Set up the host, build images and carve, and run carve (prints an admin token).
run:
	./scripts/run.sh

## Set up the host and images, then run every check and test.
test: setup images
	./tests/setup-test-tools.sh
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	CARVETEST_IMAGE_DIR=$(IMAGE_DIR) cargo test
	CARVETEST_IMAGE_DIR=$(IMAGE_DIR) ./tests/with-postgres.sh cargo test --test api
	CARVE_IMAGE_DIR=$(IMAGE_DIR) ./tests/schemathesis.sh

## Install and start libvirt, QEMU and the image tools (Debian 12, as root).
setup:
	./scripts/setup-host.sh

## Build the guest images (cached; rebuilt only when a recipe changes).
images: setup
	./images/build.sh $(IMAGE_DIR)

## Benchmarks against raw virsh; see bench/README.md.
bench: setup images
	./bench/run.sh
