# Quick start: `make demo` (runs the main job on the built-in phantom benchmark)
# and `make test` (the default test suite). Both create or refresh .venv from
# pyproject.toml; the stamp files make a second call cheap.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU torch wheel sits on disk; pip must see it before any index offers a CUDA build.
PIP    := $(PY) -m pip --disable-pip-version-check

.PHONY: demo test test-slow lint format bench power benchmark ablations venv venv-test clean \
  benchmark-hippocampus benchmark-hippocampus-paperlike

$(VENV)/.stamp-base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[cpu]'
	touch $@

# The oneDNN conv extension (conv_impl "onednn"), compiled for this venv's jaxlib. Where
# it cannot be built (no g++, say) the build says why, make carries on with the XLA
# path, and the stamp stays absent so that the next make tries again.
$(VENV)/.stamp-onednn: $(VENV)/.stamp-base assft_jax/models/onednn_conv.cc
	$(PY) -m assft_jax.models.onednn_build && touch $@ || \
	    echo "make: carrying on without the oneDNN convs; the next make retries the build"

$(VENV)/.stamp-test: $(VENV)/.stamp-base pyproject.toml | $(VENV)/.stamp-onednn
	$(PIP) install -q -e '.[cpu,test]'
	touch $@

$(VENV)/.stamp-lint: $(VENV)/.stamp-base pyproject.toml
	$(PIP) install -q -e '.[lint]'
	touch $@

venv: $(VENV)/.stamp-onednn
venv-test: $(VENV)/.stamp-test

# The main job on the built-in phantom benchmark: ASSFT, Random+SSFT (isolates the query)
# and DKD+ASD with a supervised stage 3 of the same length (isolates the pseudo-labels),
# two cells at a time, then the report (runs/demo/report.md, runs/demo/dice_vs_budget.png).
# Rerunning resumes.
demo: venv
	$(PY) -m experiments.sweep --flagfile=experiments/flags/demo.flags \
	    --strategies=assft,random+ssft,dkd_asd+sup --seeds=0 --jobs=2 --out=runs/demo

# The evidence benchmark (RESULTS.md): first its statistical power
# (resumes; runs/benchmark/power/power.json), then every arm of the paper's Table 1 and
# both compute-matched controls over 5 seeds, two cells at a time, then the report.
# `make ablations` adds the arms of Tables 6 and 7 to the same report. Both resume.
BENCH_ARMS := lower_bound,upper_bound,random,fg_random,entropy,least_confidence,margin,$\
  coreset,badge,sann,ugtst,cup,dkd_asd,assft,dkd_asd+sup,random+ssft,random+sup
ABLATION_ARMS := dkd,dkd_low,asd,asd_low,asd_tau1,asd_tau1_low
# The key arms of the second training regime, and the arms of the ablation report.
KEY_ARMS := lower_bound,upper_bound,random,fg_random,entropy,dkd_asd,assft,random+ssft,$\
  dkd_asd+sup,random+sup
ABLATION_REPORT_ARMS := random,entropy,$(ABLATION_ARMS)

power: venv
	$(PY) -m experiments.power --flagfile=experiments/flags/benchmark.flags \
	    --out=runs/benchmark/power

benchmark: power
	$(PY) -m experiments.sweep --flagfile=experiments/flags/benchmark.flags \
	    --strategies=$(BENCH_ARMS) --seeds=0-4 --jobs=2 --out=runs/benchmark

ablations: power
	$(PY) -m experiments.sweep --flagfile=experiments/flags/benchmark.flags \
	    --strategies=$(ABLATION_ARMS) --seeds=0-4 --jobs=2 --out=runs/benchmark

# The real-data benchmark (experiments/flags/hippocampus.flags): power first, then every
# arm of Table 1 and both matched controls, then Tables 6-7's arms, over 5 seeds, and the
# reports (runs/hippocampus/report.md, runs/hippocampus/ablations/report.md). The data is
# read from HIPPOCAMPUS, MSD's Task04_Hippocampus layout. Everything resumes.
HIPPOCAMPUS ?= ../shared/data/hippocampus
HIPPO := --flagfile=experiments/flags/hippocampus.flags --data_dir=$(HIPPOCAMPUS)
HIPPO_PL := --flagfile=experiments/flags/hippocampus_paperlike.flags --data_dir=$(HIPPOCAMPUS)

benchmark-hippocampus: venv
	$(PY) -m experiments.power $(HIPPO) --out=runs/hippocampus/power
	$(PY) -m experiments.sweep $(HIPPO) --strategies=$(BENCH_ARMS) --seeds=0-4 --jobs=2 \
	    --out=runs/hippocampus --noreport
	$(PY) -m experiments.sweep $(HIPPO) --strategies=$(ABLATION_ARMS) --seeds=0-4 --jobs=2 \
	    --out=runs/hippocampus --noreport
	$(PY) -m experiments.report runs/hippocampus --arms=$(BENCH_ARMS)
	$(PY) -m experiments.report runs/hippocampus --arms=$(ABLATION_REPORT_ARMS) \
	    --out=runs/hippocampus/ablations

# The second, paper-like training regime on the key arms (its own power measurement first).
benchmark-hippocampus-paperlike: venv
	$(PY) -m experiments.power $(HIPPO_PL) --out=runs/hippocampus_paperlike/power
	$(PY) -m experiments.sweep $(HIPPO_PL) --strategies=$(KEY_ARMS) --seeds=0-4 --jobs=2 \
	    --out=runs/hippocampus_paperlike

test: venv-test
	$(PY) -m pytest -q

test-slow: venv-test
	$(PY) -m pytest -q -m slow

# One style (pyproject.toml [tool.ruff]): lint rules and a format check; `make format` fixes.
lint: $(VENV)/.stamp-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.stamp-lint
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv-test
	$(PY) -m experiments.bench all

clean:
	rm -rf $(VENV)
