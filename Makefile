# Quick start:  make demo   (install, simulate a cohort, run participant + group)
#               make test   (install, run the whole test suite incl. slow end-to-end tests)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO ?= demo
# The torch build, chosen here only (README, Install): TORCH_SPEC is what pip installs (the
# tested release); TORCH_INDEX, empty by default, is an index to take it from instead of the one
# pip already uses. On a machine without an NVIDIA GPU:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test benchmark benchmark-models clean

install: $(VENV)/.installed

# torch first, the build chosen above (with the default, PyPI's Linux x86_64 wheel is the CUDA
# build: more than 2 GB with its nvidia-* wheels); then everything else in one pip call so that
# antspyx's numpy/scipy caps are resolved together.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: install
	rm -rf $(DEMO)
	$(BIN)/pseudopet-simulate $(DEMO)/bids --controls 3 --patients 3 --seed 1
	$(BIN)/pseudopet $(DEMO)/bids $(DEMO)/out participant --nprocs 2 --omp-nthreads 1
	$(BIN)/pseudopet $(DEMO)/bids $(DEMO)/out group
	@echo
	@echo "Demo outputs:   $(DEMO)/out  (cluster tables: $(DEMO)/out/sub-*/pet/*_desc-*Focus_clusters.tsv; reports: $(DEMO)/out/sub-*.html)"
	@echo "Group report:   $(DEMO)/out/group/group.html  (tables: $(DEMO)/out/group/*.tsv)"
	@echo "Figures:        $(DEMO)/out/sub-*/figures/  (interactive viewer inside each sub-*.html)"
	@echo "PDF reports:    $(DEMO)/out/sub-*/report/*_report.pdf  (one per subject and analysis)"
	@echo "Ground truth:   $(DEMO)/bids_truth/truth.tsv"
	@echo "Work folder:    $(DEMO)/out_work  ($$(du -sh $(DEMO)/out_work | cut -f1): preprocessing cache and transforms; reruns reuse it, 'rm -rf $(DEMO)/out_work' frees it)"

test: install
	$(BIN)/python -m pytest -q

benchmark: install
	$(BIN)/python benchmarks/participant.py

# model sizes/speeds per preset, then trained small models vs the tissue baseline (about 1.5 h
# on 2 CPU cores), then CycleGAN with 0/1/2 context slices (three more trainings, about 1.5 h):
# docs/models_benchmark.md, docs/model_comparison.md, docs/context_slices.md
benchmark-models: install
	$(BIN)/python benchmarks/models.py --presets tiny small paper
	rm -rf bench_models && mkdir -p bench_models
	$(BIN)/pseudopet-simulate bench_models/train_bids --controls 12 --seed 2026 --t1-voxel-size 1.5 --difficulty ladder --uptake-pattern template --nprocs 2
	$(BIN)/pseudopet-simulate bench_models/test_bids --controls 20 --patients 30 --seed 2027 --difficulty ladder --uptake-pattern template --nprocs 2
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/model_comparison.py bench_models --stages train
	$(BIN)/python benchmarks/syndiff_sampling.py bench_models/train_out/models/syndiff bench_models/train_work
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/model_comparison.py bench_models --stages test report --test-labels C01 C02 C03 C04 C05 C06 C07 C08 C09 C10 P01 P02 P03 P04 P05 P06 P07 P08 P09 P10 P11 P12
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/context_slices.py bench_models/train_bids bench_models/context --model cyclegan --steps 3000 --val-every 500 --work-dir bench_models/train_work --out docs/context_slices.md

clean:
	rm -rf $(DEMO) .pytest_cache
