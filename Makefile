# The conformance suite for activation checkpointing under torch.compile.  See README.md.
PY      ?= .venv/bin/python
TORCH   ?= torch==2.13.0
# triton for the user-Triton-kernel cells (the project's `triton` extra); ~290 MB wheel, ~1 GB installed
TRITON  ?= triton==3.9.0
PYTEST  = $(PY) -m pytest
# Extra pytest arguments, e.g. make test ARGS="-k tags_function -x"
ARGS    ?=
# Parallel workers; grouped by case so a case's cells share a worker (and its eager reference).
XDIST   ?= -n 2 --dist loadgroup
# Shard i of N across machines (make test SHARD=1/2): pytest-split, balanced by .test_durations; the shards of one
# selection together run it exactly once.  Split first, then xdist distributes the shard's cells over the workers.
SHARD   ?=
SPLIT    = $(if $(SHARD),--splits $(word 2,$(subst /, ,$(SHARD))) --group $(word 1,$(subst /, ,$(SHARD))))

# Bytecode: a machine that sets PYTHONDONTWRITEBYTECODE=1 (this one does) makes every process -- the pytest
# controller and each xdist worker -- compile the harness from source and re-rewrite the asserts of the ~170 plugin
# modules: ~0.9 s a process start (bench/run_bench.py).  The .pyc files go to __pycache__/ (git-ignored).
export PYTHONDONTWRITEBYTECODE =

FUZZ_SECONDS ?= 180
FUZZ_SEED    ?= 0
FUZZ_WORKERS ?=

.PHONY: fuzz install gpu-check-dry-run examples test test-cuda snapshot-update-cuda snapshot-update snapshot-new check meta meta-slow coverage clean nightly

install: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" "$(TRITON)" -e ".[triton]"
	touch $@

test: install  ## the conformance suites on CPU against the committed goldens
	$(PYTEST) suites $(XDIST) -m "not slow" $(SPLIT) $(ARGS)

# make test-cuda: one xdist worker per visible GPU (conftest.py pins worker gwN to GPU N); one GPU runs without xdist.
# CUDA_WORKERS overrides the count (workers share GPUs round-robin); INSTALL= skips the venv (e.g. PY=python3 on a
# machine whose own Python has torch, as scripts/gpu_check.sh does).
CUDA_WORKERS ?= $(shell $(PY) -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 1)
CUDA_XDIST    = $(if $(filter-out 0 1,$(CUDA_WORKERS)),-n $(CUDA_WORKERS) --dist loadgroup)
INSTALL      ?= install
CUDA_PYTEST   = $(PYTEST) suites --device cuda $(CUDA_XDIST) -m "not slow"

test-cuda: $(INSTALL)  ## the same on CUDA (CPU-only cases included), one worker per visible GPU
	$(CUDA_PYTEST) $(ARGS)

snapshot-update-cuda: $(INSTALL)  ## regenerate golden/cuda from a CUDA run (same selection as test-cuda)
	$(CUDA_PYTEST) --snapshot-update $(ARGS)

snapshot-update: install  ## regenerate goldens of passing cells, remove stale ones, print a review summary
	$(PYTEST) suites -m "not slow" --snapshot-update $(ARGS)

snapshot-new: install  ## write goldens only for cells that have none yet
	$(PYTEST) suites -m "not slow" --snapshot-update-new-only $(ARGS)

nightly:  ## whole suite (slow matrix too) vs committed goldens under TORCH in .nightly-venv/<spec>; runs/<ts>-<torch>/; then make meta-slow; exit 0 clean, 1 graph-only drift, 2 semantic failures, 3 the run (or a meta-slow test) failed
	$(MAKE) install TORCH=torch==2.13.0  # .venv keeps the pinned torch; TORCH only picks the nightly's environment
	rc=0; $(PY) -m harness.tools.nightly run --torch "$(TORCH)" $(if $(ARGS),-- $(ARGS)) || rc=$$?; \
	$(PYTEST) tests $(XDIST) -m meta_slow || rc=3; exit $$rc

# Release compatibility: the whole suite on each torch release in its own .nightly-venv/torch-<release>/, sequentially,
# resumable (RERUN="2.14.1" or RERUN=all reruns done releases); report in runs/compat/compat.html and compat.json.
RELEASES ?= 2.11.0 2.12.1 2.13.0 2.14.0 2.14.1
RERUN    ?=
compat: install  ## every suite on each of RELEASES against the pinned goldens; runs/compat/{compat.html,compat.json,progress.log}
	$(PY) -m harness.tools.compat run --releases "$(RELEASES)" $(if $(RERUN),--rerun $(RERUN)) $(if $(WORKERS),--workers $(WORKERS)) $(if $(ARGS),-- $(ARGS))

compat-known: install  ## the tests known_failures.toml's entries address on each of RELEASES (confirms their ranges): runs/compat-known/
	$(PY) -m harness.tools.compat --out runs/compat-known run --known-failures --releases "$(RELEASES)" $(if $(RERUN),--rerun $(RERUN)) $(if $(WORKERS),--workers $(WORKERS))

compat-envs:  ## the per-release environments and the disk each takes
	$(PY) -m harness.tools.compat envs

compat-prune:  ## remove environments: PRUNE="2.11.0 2.12.1" (or PRUNE=all)
	$(PY) -m harness.tools.compat prune $(if $(filter all,$(PRUNE)),--all,$(PRUNE))

.PHONY: compat compat-known compat-envs compat-prune

memory-report: install  ## saved-activation bytes vs recompute FLOPs per case and policy/budget: reports/memory_report.{md,png}
	$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install -q -e ".[report]"
	$(PY) -m harness.tools.memory_report --out reports $(ARGS)

.PHONY: memory-report budget-matrix

budget-matrix: install  ## the budget_matrix selection: solver x estimator x budget x partitioner knobs (harness/rows/cases/budget_solvers.py; nightly)
	$(PYTEST) suites/test_budget_solvers.py $(XDIST) -m budget_matrix $(ARGS)

# The models dependency group (pyproject.toml) beside the pinned torch (harness/tools/reports/envs.py install_models,
# which the nightly's and the release matrix's environments use too).
models-install: .venv/.models  ## install the models dependency group (HF transformers, torchtitan, timm, torchvision)

.venv/.models: pyproject.toml | install
	$(PY) -m harness.tools.reports.envs models $(PY)
	touch $@

models: models-install  ## the real-model suite, every cell, and the user path's verdicts on real models (HF_HUB_OFFLINE=1)
	HF_HUB_OFFLINE=1 $(PYTEST) suites/test_real_models.py tests/test_real_model_verdicts.py $(XDIST) $(ARGS)

.PHONY: models models-install

meta: install  ## the harness's own tests, but for the slow set (meta_slow: make meta-slow, and the nightly)
	$(PYTEST) tests $(XDIST) -m "not meta_slow" $(ARGS)

meta-slow: install  ## the harness's tests that run whole pytest, nightly or repro processes (minutes); make nightly runs them too
	$(PYTEST) tests $(XDIST) -m meta_slow $(ARGS)

gpu-check-dry-run: install  ## scripts/gpu_check.sh cannot rot: syntax, its wheel resolves, the CUDA selection collects
	PY=$(PY) bash scripts/gpu_check.sh --dry-run

examples: install  ## the examples' tests (the user path through the ac_conformance fixture); their expectations are in known_failures.toml
	$(PYTEST) examples $(XDIST) $(ARGS)

check: meta gpu-check-dry-run examples test  ## the harness's own tests, the GPU script's dry run, the examples, then the conformance suite

docs: install  ## regenerate docs/layout.md and the README's layout table from the folders of harness/
	$(PY) -m harness.tools.layout

coverage: install  ## write docs/coverage.md: each catalogue test -> our cases, where they run, known failures
	$(PY) -m harness.tools.coverage

.PHONY: bench durations findings docs

findings: install  ## run every repro under findings/ on TORCH (default: the pinned one): each verdict vs its known-failure entry
	$(PY) -m harness.tools.findings --torch "$(TORCH)" --out reports/findings-$(subst ==,-,$(TORCH)).md

bench: install  ## serial vs -n 2, cold vs warm, time split per cell; make test vs PyTorch's file side by side; meta tests: table + reports/bench.json (BENCH_PARTS, BENCH_ARGS, BENCH_REPEAT)
	$(PY) -c "import expecttest" 2>/dev/null || $(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/run_bench.py

# --dist load, not loadgroup: under loadgroup xdist reports the node ids with their group ("...]@case"), which
# pytest-split would store and then never match against the ids it splits.
durations: install  ## refresh .test_durations (what SHARD balances by); ARGS='-m ""' times the slow matrix too
	$(PYTEST) suites -n 2 --dist load -m "not slow" --store-durations $(ARGS)

clean:
	rm -rf .cache reports .pytest_cache

fuzz: install  ## property-based differential fuzzing (harness/tools/fuzz) for FUZZ_SECONDS in FUZZ_WORKERS processes (default: one per CPU); findings land in findings/fuzz/
	$(PY) -m harness.tools.fuzz run --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED) $(if $(FUZZ_WORKERS),--workers $(FUZZ_WORKERS))

# The fault-injection kit (harness/tools/faults, issue 29): a selection against every fault of torch's AC pipeline.
# MUTATE_SELECTION is the pytest selection (default make test's); FAULTS="id ..." a subset; MUTATE_JOBS runs at a time,
# MUTATE_WORKERS xdist workers per run (0: none; 2 runs of 0 beat 1 run of -n 2 on 2 cores); MUTATE_OPTS more options
# (--rerun ID, --keep-stale, --expect-kills FILE).  Resumable: a finished fault is not rerun (runs/mutate/state.json).
MUTATE_SELECTION ?= suites -m "not slow"
MUTATE_JOBS      ?= 2
MUTATE_WORKERS   ?= 0
MUTATE_OPTS      ?=
.PHONY: mutate smoke smoke-check guard faults

mutate: install  ## every fault of the kit against make test's selection: runs/mutate/kill-matrix.{html,json}; bench/{kill-matrix.json,smoke.txt}
	$(PY) -m harness.tools.faults mutate --jobs $(MUTATE_JOBS) --workers $(MUTATE_WORKERS) $(if $(FAULTS),--faults "$(FAULTS)") $(MUTATE_OPTS) -- $(MUTATE_SELECTION) $(ARGS)

# Serial by default: 30 cells, ~8 s of cell time warm; two xdist workers' start-up cost more than they share out
# (12.9 s serial against 15.6 s with -n 2, whole make smoke, warm, 2 runs each, 2026-12-07).  SMOKE_XDIST="$(XDIST)" for xdist.
SMOKE_XDIST ?=
smoke: install  ## the smoke selection (bench/smoke.txt, from the kill matrix): kills every fault make test kills
	$(PYTEST) @bench/smoke.txt $(SMOKE_XDIST) $(ARGS)

smoke-check: install  ## the kit against the smoke selection: every fault bench/kill-matrix.json kills must die (runs/mutate-smoke/)
	$(PY) -m harness.tools.faults mutate --out runs/mutate-smoke --jobs $(MUTATE_JOBS) --workers $(MUTATE_WORKERS) --expect-kills bench/kill-matrix.json $(MUTATE_OPTS) -- @bench/smoke.txt

guard: install  ## the cells that kill the faults in FILES="torch/_functorch/partitioners.py ..." (GUARD_ALL=1: every killing cell)
	$(PY) -m harness.tools.faults guard $(if $(GUARD_ALL),--all) $(FILES) -- $(XDIST) $(ARGS)

faults: install  ## the kit's faults, their torch files and the regressions they simulate
	$(PY) -m harness.tools.faults list
