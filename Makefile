# pyoci: `make demo` and `make test` install what they need on Debian 12 (as root).
# Debian's interpreter: it starts in 8.6 ms where this machine's pyenv build
# takes 10.3, and every runtime command pays that; others may read it (rootless).
PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYOCI := $(abspath $(VENV))/bin/pyoci
APT_PACKAGES := gcc libc6-dev python3-dev python3-venv busybox-static runc systemd kmod \
	podman conmon netavark aardvark-dns containerd docker.io buildah uidmap catatonit \
	slirp4netns rootlesskit python3-cffi-backend python3-jsonschema apparmor crun time \
	containernetworking-plugins criu
DEMO_DIR := build/demo

.PHONY: demo test test-fast test-v2 conformance-runc bench install apt-deps clean

apt-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: setup.py pyproject.toml pyoci/_build.py csrc/shim.c csrc/shim.h csrc/waiter.c
	$(MAKE) apt-deps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# compat mode: a plain path in a .pth, no import hook to slow every start.
	$(PY) -m pip install -q -e . --config-settings editable_mode=compat pytest hypothesis grpcio
	touch $@

install: $(VENV)/.installed
	@# Compiled bytecode: the environment may forbid writing it on import.
	$(PY) -m compileall -q pyoci conformance >/dev/null

demo: install
	rm -rf $(DEMO_DIR) && mkdir -p build
	PYTHONPATH=. $(PY) scripts/make_demo_bundle.py $(DEMO_DIR)
	$(PYOCI) --root $(abspath build/state) run --bundle $(DEMO_DIR) pyoci-demo

test: install
	OCI_RUNTIME=$(PYOCI) $(PY) -m pytest -p no:cacheprovider
	$(MAKE) conformance-runc
	$(MAKE) test-v2

# The cgroup tests again on a pure cgroup v2 host: one boot of a 6.1 kernel
# VM (virtme-ng, software emulation) that shares this checkout. Also what 6.1
# says unlike the host's kernel: pidfd_open of a process that is gone.
V2_TESTS := tests/test_integration_cgroups.py tests/test_integration_cgroup_fields.py \
	tests/test_integration_linux.py \
	tests/test_integration_systemd.py tests/test_integration_rootless.py \
	tests/test_integration_lsm.py tests/test_integration_checkpoint.py tests/test_unit_procfs.py
test-v2: install
	@# In the same boot: podman's checkpoint and restore (CRIU works only here), its storage
	@# on the guest's /run (a tmpfs: overlay storage cannot live on the guest's overlayfs /tmp).
	@# The checkpoint tests that need no CRIU have run on the host.
	tests/vm/run_in_v2_vm.sh '$(PY) -m pytest -p no:cacheprovider -q $(V2_TESTS) -m "not engine" -k "(cgroup or device or bad_input or seccomp or systemd or rootless or lsm or checkpoint or pidfd) and not before_criu_runs and not walks_into"; first=$$?; OCI_ENGINE_TMP=/run $(PY) -m pytest -p no:cacheprovider -q conformance/engines/test_podman.py -k checkpoint && exit $$first'
	@# SELinux is the other major LSM: a second, short boot with Debian's policy loaded (permissive).
	VM_LSM=selinux tests/vm/run_in_v2_vm.sh 'load_policy -i && $(PY) -m pytest -p no:cacheprovider -q tests/test_integration_lsm.py -k selinux' 

test-fast: install
	$(PY) -m pytest -p no:cacheprovider -m 'not root and not vm and not engine'

# The black-box conformance suite is proven on runc too (the engine suite
# already runs every scenario on both runtimes within `make test`).
conformance-runc: install
	OCI_RUNTIME=runc $(PY) -m pytest -p no:cacheprovider -q conformance -m 'not engine' 

bench: install
	$(PY) bench/lifecycle.py

clean:
	rm -rf build $(VENV) *.egg-info pyoci/_native*.so pyoci/pyoci-waiter
