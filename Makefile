# vmmpy - build, test and demo entry points. `make test` and `make demo` work on a fresh Debian machine.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEB_PKGS := clang lld llvm libclang-rt-14-dev libfdt-dev zlib1g-dev qemu-system-arm cppcheck clang-format
PY_PKGS := cffi pytest Pillow pylibfdt unicorn==2.1.4 ruff setuptools wheel
SRCS := $(wildcard csrc/*/*.c csrc/*/*.h) include/vmm.h vmmpy/_build_ffi.py
STAMP := build/.stamp-ext

.PHONY: all deps build guests test test-fast test-asan lint demo bench debian clean fuzz
all: build guests

# Install what is missing: Debian packages, then Python packages.
deps: build/.stamp-deps
build/.stamp-deps: Makefile
	@mkdir -p build
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "==> installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(PYTHON) tools/pydeps.py $(PY_PKGS) || $(PIP) install -q $(PY_PKGS)
	@touch $@

# The cffi extension compiles libvmm; an editable install also registers the CLI and pytest plugin.
build: deps $(STAMP)
$(STAMP): $(SRCS) pyproject.toml setup.py
	@echo "==> building libvmm (vmmpy._vmm)"
	@$(PIP) install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v "Running pip as the 'root'" || true
	@$(PYTHON) -c "import vmmpy" 
	@touch $@

guests: deps
	@$(MAKE) -s -C guest

test: build guests
	$(PYTHON) -m pytest tests/ -q

# Everything but the slow tier (Linux boots).
test-fast: build guests
	$(PYTHON) -m pytest tests/ -q -m "not slow"

# Tier 1 and 2 against an ASan+UBSan build of libvmm.
test-asan: build guests
	@tools/asan.sh $(PYTHON)

# libFuzzer targets in fuzz/ (clang, ASan+UBSan), FUZZ_SECONDS each (default 60).
fuzz: build
	@tools/fuzz.sh $(PYTHON)

lint: deps
	$(PYTHON) -m ruff check vmmpy tests bench tools
	$(PYTHON) -m ruff format --check vmmpy tests bench tools
	clang-format --dry-run -Werror include/vmm.h csrc/*/*.[ch]
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

bench: build guests
	$(PYTHON) bench/exit_latency.py
	$(PYTHON) bench/first_byte.py
	$(PYTHON) bench/irq_latency.py
	$(PYTHON) bench/gpu.py
	$(PYTHON) bench/idle.py
	$(PYTHON) bench/linux_boot.py
	$(PYTHON) bench/fs.py

debian: deps
	$(PYTHON) tools/fetch_debian.py

clean:
	rm -rf build vmmpy/_vmm*.so vmmpy/_vmm.c *.egg-info
	-$(MAKE) -s -C guest clean
