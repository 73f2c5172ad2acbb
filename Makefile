# libLWFM: the two commands of the README.
#   make demo   installs missing Debian packages, builds, runs the main job
#   make test   same set-up, then the whole test suite
# Other targets: make build, make bench, make clean,
#   make test-sanitize  ASan+UBSan and TSan builds, their tests (tests/sanitize.sh)
#   make fresh-check    the README's two commands in a new minimal Debian 12 root,
#                       as CI runs them (tests/fresh_machine.sh; root, ~30 min)
#   make abi-baseline   record the ABI of this version (docs/api-stability.md)

BUILD ?= build
PYTHON := /usr/bin/python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# dpkg-dev: meson asks its dpkg-architecture for Debian's library folder
# (lib/x86_64-linux-gnu, which ld.so and pkg-config search under /usr/local);
# without it meson installs into lib64, which neither searches.
DEPS := gcc g++ meson ninja-build pkg-config cmake libdnnl-dev zlib1g-dev libzip-dev \
        libpng-dev libjpeg-dev libwebp-dev libcairo2-dev python3-numpy python3-torch \
        python3-pytest python3-scipy python3-pil fonts-dejavu-core fonts-dejavu-extra \
        abigail-tools valgrind python3-pip python3-venv python3-setuptools python3-wheel \
        python3-mypy dpkg-dev python3-distributed
export PYTHONPATH := $(CURDIR)/bindings/python$(if $(PYTHONPATH),:$(PYTHONPATH))
export LWFM_LIBRARY := $(CURDIR)/$(BUILD)/liblwfm.so

.PHONY: all deps build demo test test-sanitize fresh-check abi-baseline bench clean

all: build

deps:
	@missing=$$(for p in $(DEPS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "== installing missing packages:" $$missing; \
	  $(SUDO) apt-get update && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release -Ddebug=true

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	$(PYTHON) examples/demo.py --build $(BUILD)

test: build
	meson test -C $(BUILD) --print-errorlogs --num-processes 2

# Sanitizer builds in build-asan and build-tsan (about 10 min on 2 cores).
test-sanitize: deps
	sh tests/sanitize.sh

# What CI proves: a fresh machine with only `make` runs the README's commands.
fresh-check:
	$(SUDO) sh tests/fresh_machine.sh

# The ABI of this version as the baseline the `abi` test compares against.
VERSION := $(shell sed -n 's/^\#define LWFM_VERSION_STRING "\(.*\)"/\1/p' include/lwfm/lwfm.h)
abi-baseline: build
	@if [ -e abi/liblwfm-$(VERSION).abi ] && [ -z "$(FORCE)" ]; then \
	  echo "abi/liblwfm-$(VERSION).abi exists (a released baseline is never redone; FORCE=1 to overwrite)"; exit 1; fi
	@readelf -S $(BUILD)/liblwfm.so | grep -q '\.debug_info' || \
	  { echo "$(BUILD)/liblwfm.so has no debug info: meson configure $(BUILD) -Ddebug=true"; exit 1; }
	mkdir -p abi
	abidw --headers-dir include/lwfm --drop-private-types --exported-interfaces-only \
	  --drop-undefined-syms --no-elf-needed --no-corpus-path --no-comp-dir-path --no-show-locs \
	  --out-file abi/liblwfm-$(VERSION).abi $(BUILD)/liblwfm.so
	@echo "wrote abi/liblwfm-$(VERSION).abi: commit it with the release"

# bench/bench_all.py: every figure of docs/benchmarks.md against the PyTorch
# reference in one run (BENCH_ARGS=--quick for a short one); `$(BUILD)/lwfm bench
# --model M` measures without Python.
bench: build
	$(PYTHON) bench/bench_all.py --library $(LWFM_LIBRARY) $(BENCH_ARGS)

clean:
	rm -rf $(BUILD) build-asan build-tsan
