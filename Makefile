# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv, installs orch + the trainer, runs the main job on the local target
#   make test   installs what the tests need (Debian packages too), then runs the whole suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision for the local venv. On the NGC image torch is already there and never reinstalled.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: venv demo test system-deps bench clean

$(VENV)/.installed: pyproject.toml setup.py trainer/_jpegcrop.c requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q -e '.[trainer,dev]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	@# Each demo starts over: a local job's teardown keeps its outputs, which the next launch would resume.
	rm -rf runs/demo-weights "$$($(PY) -c 'from orchestrator.machines.local_jobs import job_dir; print(job_dir("demo"))')"
	$(VENV)/bin/trainer demo-data --dest runs/demo-data
	$(VENV)/bin/orch launch --target local --no-gpus --name demo --data runs/demo-data -- --recipe demo
	$(VENV)/bin/orch logs demo --follow
	$(VENV)/bin/orch fetch-weights demo --which all --dest runs/demo-weights
	$(VENV)/bin/trainer evaluate --data runs/demo-data --checkpoint runs/demo-weights/checkpoints/best.pt
	$(VENV)/bin/orch teardown demo --yes

system-deps:
	bash scripts/install-system-deps.sh

test: system-deps venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) bench/train_step.py
	$(PY) bench/data_pipeline.py
	$(PY) bench/end_to_end.py
	$(PY) bench/prepare.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
