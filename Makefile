# genefarm: two commands do all the set-up on a fresh Debian 12 machine.
#   make demo   creates .venv, installs, runs the shipped sample end to end
#   make test   installs what the tests need (apt + pip, idempotent) and runs the whole suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# numba's compiled kernels are cached here across runs (see kernels/_numba.py)
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

# Debian packages the tests use (real tools, checked against our output)
APT_TEST := samtools tabix picard-tools
# ... and the real daemons the master's tests start (SGE + DRMAA, Slurm + munge, PostgreSQL)
APT_TEST += gridengine-master gridengine-exec gridengine-client gridengine-drmaa1.0 libjemalloc2 \
	munge slurm-wlm postgresql
# ... and what bcc's tests use: sshd on the test hosts (network namespaces: iproute2, util-linux),
# sshfs (the image the rolling-update test moves a group to)
APT_TEST += openssh-server openssh-client sshfs iproute2 util-linux
# Debian packages the benchmarks use (the peer tools and the read simulator)
APT_BENCH := bwa minimap2 samtools bcftools freebayes tabix time seqan-apps

.PHONY: demo test test-fast bench bench-align install apt-test apt-bench clean

$(PY):
	scripts/mkvenv.sh "$(PYTHON)" "$(VENV)"

$(VENV)/.installed: setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all]'
	touch $@

install: $(VENV)/.installed

apt-test:
	images/sge/bootstrap.sh preseed
	scripts/ensure-apt.sh $(APT_TEST)

apt-bench:
	scripts/ensure-apt.sh $(APT_BENCH)

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/demo.sh

test: apt-test install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/run-tests.sh $(ARGS)

# everything but the suites marked slow, for a quick local loop (CI runs `make test`)
test-fast: apt-test install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" scripts/run-tests.sh -m "not slow" $(ARGS)

bench-align: apt-bench install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/align_bench.py $(ARGS)

clean:
	rm -rf .cache .pytest_cache demo-out build *.egg-info
