# vmmpy - build, test and demo entry points. `make test` and `make demo` work on a fresh Debian machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEB_PKGS := clang lld llvm libclang-rt-14-dev libfdt-dev zlib1g-dev qemu-system-arm cppcheck clang-format \
  python3-tk xvfb xdotool libslirp-dev gdb-multiarch tcpdump iproute2 cmake patch
PY_PKGS := cffi pytest Pillow pylibfdt unicorn==2.1.4 ruff setuptools wheel matplotlib pytest-xdist universalmutator
SRCS := $(wildcard csrc/*/*.c csrc/*/*.h csrc/backend/hvfsim/*.[ch] csrc/backend/hvfsim/*/*.h) include/vmm.h vmmpy/_build_ffi.py
STAMP := build/.stamp-ext
UNAME_S := $(shell uname -s)
UNAME_M := $(shell uname -m)
# extra pytest arguments for test and test-fast, e.g. PYTEST_ARGS="-n auto" (pytest-xdist: one worker per core)
PYTEST_ARGS ?=

.PHONY: all deps unicorn build guests sign test test-fast test-asan test-tsan test-portable mutate mutate-ci lint demo bench bench-report debian clean fuzz soak aarch64 deps-aarch64 nested
all: build guests

# $(call apt_install,PACKAGES): install the Debian packages of the list that are missing (sudo unless root).
define apt_install
@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  echo "==> installing Debian packages:$$missing"; \
  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
fi
endef

# Install what is missing: Debian packages, then Python packages.
deps: build/.stamp-deps
build/.stamp-deps: Makefile
	@mkdir -p build
ifeq ($(UNAME_S),Darwin)
	@command -v brew >/dev/null || { echo "vmmpy: needs Homebrew (https://brew.sh) for libfdt (brew install dtc)"; exit 1; }
	@brew list dtc >/dev/null 2>&1 || brew install dtc
else
	$(call apt_install,$(DEB_PKGS))
endif
	@$(PYTHON) tools/pydeps.py $(PY_PKGS) || $(PIP) install -q $(PY_PKGS)
	@touch $@

# The patched Unicorn (third_party/unicorn/README.md): the PyPI sdist with our patch, aarch64 only, built
# once per patch into build/unicorn/<hash>/ (about a minute of 2 cores). vmmpy loads it when built.
unicorn: deps
	@$(PYTHON) tools/build_unicorn.py --jobs 2 >/dev/null

# The cffi extension compiles libvmm; an editable install also registers the CLI and pytest plugin.
build: deps unicorn $(STAMP)
$(STAMP): $(SRCS) pyproject.toml setup.py
	@echo "==> building libvmm (vmmpy._vmm)"
	@$(PIP) install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v "Running pip as the 'root'" || true
	@$(PYTHON) -c "import vmmpy" 
	@touch $@

guests: deps
	@$(MAKE) -s -C guest

# macOS: ad-hoc sign this Python (and build/vmmrun, if built) with the com.apple.security.hypervisor
# entitlement that Hypervisor.framework requires (backend "hvf"); elsewhere it says it is for macOS.
sign: build
	$(PYTHON) -m vmmpy sign-python
	@if [ -f build/vmmrun ]; then $(PYTHON) -m vmmpy sign-python --binary build/vmmrun; fi

# The slow tier includes tests/test_kvm_nested.py, which needs the arm64 cross build.
test: build guests aarch64
	$(PYTHON) -m pytest tests/ -q $(PYTEST_ARGS)

# Everything but the slow tier (Linux boots).
test-fast: build guests
	$(PYTHON) -m pytest tests/ -q -m "not slow" $(PYTEST_ARGS)

# Tier 1 and 2 against an ASan+UBSan build of libvmm.
test-asan: build guests
	@tools/asan.sh $(PYTHON)

# The run loop's tests (tools/mutation_map.py's RUN_LOOP: vCPU threads, the clock thread, the waits) against a
# ThreadSanitizer build of libvmm in build/tsan/, on 2 workers (about a minute); any report fails.
test-tsan: build guests
	@tools/tsan.sh $(PYTHON)

# Mutation testing of the C core (tools/mutate.py, files and tests in tools/mutation_map.py). The full run
# tries every mutant (hours), each against the tests that reach its line, and keeps its outcomes in
# tools/mutation_ledger.txt, so that it can be done in parts and only what changed runs again;
# MUTATE_ARGS="--sample 40" or "--file csrc/arm/psci.c" narrows it.
MUTATE_ARGS ?=
mutate: build guests
	$(PYTHON) tools/mutate.py --ledger $(MUTATE_ARGS)
# CI's sample: up to 3 seeded mutants of each file in a time budget shared by file (each file gets at least
# one: tools/mutate.py --budget); fails below the kill-rate floor (docs/testing.md says why 65).
mutate-ci: build guests
	$(PYTHON) tools/mutate.py --sample 3 --budget 360 --min-rate 65

# Tier 1 and 2 against libvmm built with the portable POSIX host layer (csrc/host/host_posix.c,
# -D_XOPEN_SOURCE=700, no _GNU_SOURCE: a Linux-only call in csrc/ fails to compile), in build/portable/.
test-portable: build guests
	@tools/portable.sh $(PYTHON)

# libFuzzer targets in fuzz/ (clang, ASan+UBSan), FUZZ_SECONDS each (default 60); FUZZ_TARGETS="gpu p9" for some.
fuzz: build guests
	@tools/fuzz.sh $(PYTHON)

# The soak test alone (also in `make test`'s slow tier): SOAK_SECONDS of VMs made, run, stopped and closed.
soak: build guests
	$(PYTHON) -m pytest tests/test_soak.py -q -s

lint: deps
	$(PYTHON) -m ruff check vmmpy tests bench tools
	$(PYTHON) -m ruff format --check vmmpy tests bench tools
	clang-format --dry-run -Werror include/vmm.h csrc/*/*.[ch] csrc/backend/hvfsim/*.[ch] csrc/backend/hvfsim/*/*.h tests/hvfsim/*.c runner/*.c bench/*.c
	cppcheck --quiet --error-exitcode=1 --enable=warning,performance,portability --inline-suppr \
	  --suppress=missingIncludeSystem -Iinclude csrc

# The GPU demo guest with its serial console on the terminal; frame DEMO_FRAME is saved as DEMO_PNG.
# (hello.elf instead while guest/build/gpu_demo.elf is not built.)
DEMO_FRAME ?= 10
DEMO_PNG ?= build/demo-frame.png
demo: build guests
	@if [ -f guest/build/gpu_demo.elf ]; then \
	  $(PYTHON) -m vmmpy run guest/build/gpu_demo.elf --capture $(DEMO_FRAME) $(DEMO_PNG) --timeout 120 && \
	  echo "==> frame $(DEMO_FRAME) of the GPU demo: $(DEMO_PNG)"; \
	else \
	  echo "==> guest/build/gpu_demo.elf is not built: booting hello.elf"; \
	  $(PYTHON) -m vmmpy run guest/build/hello.elf; \
	fi

# Each benchmark writes bench/results/NAME.json (the schema of bench/common.py) and appends it to
# bench/results/history.jsonl; `make bench-report` turns them into bench/results/report.html and PNGs.
bench: build guests
	$(PYTHON) bench/exit_latency.py
	$(PYTHON) bench/first_byte.py
	$(PYTHON) bench/irq_latency.py
	$(PYTHON) bench/msi.py
	$(PYTHON) bench/gpu.py
	$(PYTHON) bench/idle.py
	$(PYTHON) bench/input_latency.py
	$(PYTHON) bench/linux_boot.py  # 1 and 2 vCPUs, plain and module-loading boots
	$(PYTHON) bench/fs.py
	$(PYTHON) bench/net.py
	$(PYTHON) bench/snapshot.py
	$(PYTHON) bench/dbgarch.py

bench-report: deps
	$(PYTHON) bench/report.py

debian: deps
	$(PYTHON) tools/fetch_debian.py

# ---- arm64 Linux hosts: libvmm with the KVM backend (no Unicorn), cross-built here ------------------
# build/aarch64/libvmm.a and a static build/aarch64/vmmrun (runner/vmmrun.c). libfdt and zlib come
# from Debian's arm64 packages, unpacked into build/aarch64/sysroot (tools/fetch_debian.py --sysroot).
# Until csrc/backend/kvm.c exists the build has no backend at all (vmm_create fails "no backend").
# On an arm64 host the same target builds natively (its gcc, static libc from libc6-dev).
ifeq ($(shell uname -m),aarch64)
CROSS ?=
A64_DEB_PKGS := gcc libc6-dev
else
CROSS ?= aarch64-linux-gnu-
A64_DEB_PKGS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross
endif
A64_CC := $(CROSS)gcc
A64_AR := $(CROSS)ar
A64_SYSROOT_PKGS := libfdt-dev libfdt1 zlib1g-dev zlib1g
A64 := build/aarch64
A64_SYSROOT := $(A64)/sysroot
A64_SRCS := $(filter-out csrc/backend/soft%.c,$(wildcard csrc/*/*.c))
A64_OBJS := $(patsubst csrc/%.c,$(A64)/obj/%.o,$(A64_SRCS))
A64_CFLAGS := -DVMM_HAVE_SOFT=0 -DVMM_BUILDING -Iinclude \
  -isystem $(A64_SYSROOT)/usr/include -std=gnu11 -O2 -g -Wall -Wextra -Werror -fvisibility=hidden -MMD -MP
A64_LIBS := -L$(A64_SYSROOT)/usr/lib/aarch64-linux-gnu -lfdt -lz -pthread

aarch64: $(A64)/libvmm.a $(A64)/vmmrun $(A64)/kvm_raw

deps-aarch64: build/.stamp-deps-aarch64
build/.stamp-deps-aarch64: Makefile
	@mkdir -p build
	$(call apt_install,$(A64_DEB_PKGS))
	@touch $@

$(A64_SYSROOT)/.stamp: | build/.stamp-deps-aarch64
	@echo "==> arm64 sysroot: $(A64_SYSROOT_PKGS)"
	@$(PYTHON) tools/fetch_debian.py --sysroot $(A64_SYSROOT) $(A64_SYSROOT_PKGS) >/dev/null
	@touch $@

# the flags are a prerequisite: objects rebuild when they change (e.g. once kvm.c appears)
$(A64)/cflags: FORCE
	@mkdir -p $(@D)
	@echo '$(A64_CC) $(A64_CFLAGS)' | cmp -s - $@ || echo '$(A64_CC) $(A64_CFLAGS)' > $@

$(A64)/obj/%.o: csrc/%.c $(A64)/cflags $(A64_SYSROOT)/.stamp
	@mkdir -p $(@D)
	@echo "  CC(arm64) $<"
	@$(A64_CC) $(A64_CFLAGS) -c $< -o $@

$(A64)/libvmm.a: $(A64_OBJS)
	@rm -f $@
	@$(A64_AR) rcs $@ $^
	@echo "==> $@"

$(A64)/runner/vmmrun.o: runner/vmmrun.c $(A64)/cflags $(A64_SYSROOT)/.stamp
	@mkdir -p $(@D)
	@$(A64_CC) $(A64_CFLAGS) -c $< -o $@

$(A64)/vmmrun: $(A64)/runner/vmmrun.o $(A64)/libvmm.a
	@$(A64_CC) -static -o $@ $< $(A64)/libvmm.a $(A64_LIBS)
	@echo "==> $@"

# bench/kvm_raw.c: bare KVM ioctls, the floor bench/kvm_exits.py compares vmmrun's exits with
$(A64)/kvm_raw: bench/kvm_raw.c $(A64)/cflags
	@$(A64_CC) -static -std=gnu11 -O2 -Wall -Wextra -Werror -o $@ $<
	@echo "==> $@"

-include $(wildcard $(A64)/obj/*/*.d $(A64)/runner/*.d)

# The same runner natively against the soft backend (Unicorn from the Python package), for comparison.
NAT := build/native
NAT_OBJS := $(patsubst csrc/%.c,$(NAT)/obj/%.o,$(wildcard csrc/*/*.c))
UNICORN_DIR = $(shell $(PYTHON) -c "import importlib.util as u, os; print(os.path.dirname(u.find_spec('unicorn').origin))")
# per platform: the unicorn wheel's library name; on macOS Homebrew's libfdt and, on Apple Silicon, the
# Hypervisor framework (backend "hvf", csrc/backend/hvf.c; sign the binary with `make sign`)
ifeq ($(UNAME_S),Darwin)
UNICORN_LIB := libunicorn.2.dylib
BREW_DTC := $(shell brew --prefix dtc 2>/dev/null)
NAT_SYS_CFLAGS := $(if $(BREW_DTC),-I$(BREW_DTC)/include)
NAT_SYS_LDFLAGS := $(if $(BREW_DTC),-L$(BREW_DTC)/lib) $(if $(filter arm64,$(UNAME_M)),-framework Hypervisor)
else
UNICORN_LIB := libunicorn.so.2
endif
NAT_CFLAGS = -DVMM_BUILDING -Iinclude -I$(UNICORN_DIR)/include $(NAT_SYS_CFLAGS) -std=gnu11 -O2 -g -Wall -Wextra \
  -Werror -fvisibility=hidden -MMD -MP

$(NAT)/obj/%.o: csrc/%.c | deps
	@mkdir -p $(@D)
	@echo "  CC $<"
	@$(CC) $(NAT_CFLAGS) -c $< -o $@

$(NAT)/runner/vmmrun.o: runner/vmmrun.c include/vmm.h
	@mkdir -p $(@D)
	@$(CC) $(NAT_CFLAGS) -c $< -o $@

build/vmmrun: $(NAT)/runner/vmmrun.o $(NAT_OBJS)
	@$(CC) -o $@ $^ $(UNICORN_DIR)/lib/$(UNICORN_LIB) -Wl,-rpath,$(UNICORN_DIR)/lib $(NAT_SYS_LDFLAGS) -lfdt -lz \
	  -pthread -lm
	@echo "==> $@"

-include $(wildcard $(NAT)/obj/*/*.d)

# Nested KVM: every tier-2 guest on build/aarch64/vmmrun --backend kvm inside qemu-system-aarch64
# (virtualization=on), see tools/nested.py.
nested: aarch64 guests
	$(PYTHON) tools/nested.py

.PHONY: FORCE
FORCE:

clean:
	rm -rf build vmmpy/_vmm*.so vmmpy/_vmm.c *.egg-info
	-$(MAKE) -s -C guest clean
