# reflowd — the only entry point humans and CI use.
#   make run    install missing system packages, build (release), run the demo / server
#   make test   install missing system packages, run the whole test suite (release mode)
#   make bench  print one JSON line per benchmark

SWIFT      ?= swift
BIN        := .build/release/reflowd
# Debian packages the build and tests need (checked with dpkg-query; installed only when missing).
# dataset-fashion-mnist: the real image data the default config names (IDX under /usr/share/datasets).
APT_PKGS   := libopenblas-dev libfftw3-dev libssl-dev zlib1g-dev pkg-config python3 python3-venv curl openssl dataset-fashion-mnist
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
OUT        ?= var/demo
# AVX2 + FMA code generation when the CPU has both (the x86-64 baseline is SSE2: the SIMD8
# kernels run at half speed). REFLOWD_FMA turns on fused multiply-adds in the kernels.
# Override with `make CPU_FLAGS=` for a portable binary.
CPU_FLAGS  ?= $(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && echo "-Xswiftc -target-cpu -Xswiftc haswell -Xswiftc -DREFLOWD_FMA")

.PHONY: all deps build test test-debug bench bench-deps run demo clean paper-2d install

all: build

deps:
	@missing=""; \
	for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	else \
	  echo "make deps: all system packages present"; \
	fi

build: deps
	$(SWIFT) build -c release $(CPU_FLAGS)

# Numeric tests run in release mode (debug builds of array loops are 10-50x slower). The
# executable is built first: the server tests start it (crash and restart, curl session).
# The test binaries link OpenBLAS but cannot re-execute themselves the way reflowd does, so the
# kernel correction is made here: `reflowd blas-core --coretype` prints the OPENBLAS_CORETYPE this
# CPU needs (nothing when OpenBLAS's own choice is right). A value set by the caller is kept.
# OpenBLAS runs single-threaded, as in reflowd (BLAS.swift: the engine threads GEMMs itself;
# OpenBLAS's spinning threads under concurrent workers slow small GEMMs by 10–100×).
test: deps
	$(SWIFT) build -c release $(CPU_FLAGS)
	@core="$$($(BIN) blas-core --coretype)"; \
	if [ -n "$$core" ]; then export OPENBLAS_CORETYPE="$$core"; echo "make test: OPENBLAS_CORETYPE=$$core (from reflowd blas-core)"; fi; \
	export OPENBLAS_NUM_THREADS=1; \
	echo "$(SWIFT) test -c release $(CPU_FLAGS) --enable-testable-imports"; \
	$(SWIFT) test -c release $(CPU_FLAGS) --enable-testable-imports

test-debug: deps
	$(SWIFT) test

# One JSON line per benchmark; docs/BENCHMARKS.md compares them with the peers side by side.
# HB_HELLO: a built ../shared/peers/hb-hello (Hummingbird) to run the HTTP benchmark against.
HB_HELLO ?= ../shared/peers/hb-hello/.build/release/HBHello
bench-deps:
	@dpkg-query -W -f='$${Status}\n' wrk 2>/dev/null | grep -q '^install ok installed' || \
	  ($(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends wrk)

# Each line carries `blas_kernel`: the OpenBLAS kernel used and whether reflowd corrected it.
bench: build bench-deps
	@$(BIN) blas-core
	@$(BIN) bench toy
	@$(BIN) bench toy --width 1024 --depth 4 --batch 1024 --steps 20 --warmup 3 --sample-steps 1 --sample-reps 2
	@$(BIN) bench gemm --m 512 --n 256 --k 256 --op NT
	@$(BIN) bench gemm --m 1024 --n 1024 --k 1024 --op NT
	@$(BIN) bench kernels
	@$(BIN) bench pairs
	@$(BIN) bench image
	@$(BIN) bench mri
	@$(BIN) bench toy-quality
	@python3 .ci/bench_http.py --reflowd $(BIN) --hb $(HB_HELLO)

# The 2-D reproduction of "Flow Straight and Fast" as a chain of job specs (docs/RESULTS.md):
# 1-RF → 2-RF (RK45 pairs, from the teacher and from scratch) → 3-RF, one-step distillation,
# evaluations, samples and an inversion. PAPER_TRAIN=config/jobs/paper-2d/rf1-moons.json for
# two moons (every later job inherits the data from its teacher). Finished jobs are skipped.
PAPER_OUT   ?= var/paper-2d
PAPER_TRAIN ?= config/jobs/paper-2d/rf1.json
PAPER_JOBS  := rf2 rf2-scratch rf3 distill eval-rf1 eval-rf2 eval-rf2-scratch eval-rf3 eval-distill sample-rf2 invert-rf2
paper-2d: build
	@set -e; $(BIN) run $(PAPER_TRAIN) --out $(PAPER_OUT)/rf1 > /dev/null; \
	for j in $(PAPER_JOBS); do $(BIN) run config/jobs/paper-2d/$$j.json --out $(PAPER_OUT)/$$j > /dev/null; done; \
	echo "results: $(PAPER_OUT)/*/result.json"

# The job server on 127.0.0.1:8080 with its data under ./var/reflowd (config/reflowd.json).
run: build
	$(BIN) serve --config config/reflowd.json

# The offline 2-D demo (trains, samples, writes var/demo/).
demo: build
	$(BIN) demo --config config/demo.json --out $(OUT)

# Installs the binary, the systemd unit and (if absent) /etc/reflowd/reflowd.json with the data
# directory set to the unit's StateDirectory (see deploy/README.md).
PREFIX ?= /usr/local
install: build
	$(SUDO) install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/reflowd
	$(SUDO) install -D -m 0644 deploy/reflowd.service $(DESTDIR)/etc/systemd/system/reflowd.service
	@if [ ! -f $(DESTDIR)/etc/reflowd/reflowd.json ]; then \
	  $(SUDO) install -d -m 0755 $(DESTDIR)/etc/reflowd && \
	  sed 's|"dataDir": "var/reflowd"|"dataDir": "/var/lib/reflowd"|' config/reflowd.json | $(SUDO) tee $(DESTDIR)/etc/reflowd/reflowd.json > /dev/null; \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemctl > /dev/null; then $(SUDO) systemctl daemon-reload; fi
	@echo "installed; start with: sudo systemctl enable --now reflowd"

clean:
	rm -rf .build .build-* var
