# Every target installs what it needs into .venv first (a fresh machine needs only Python 3.11).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BUNDLE := serving/default_bundle
# The default model: same seed, same data, same weights on this machine.
MODEL_ARGS := --simulate 600000 --seed 0 --epochs 10

.PHONY: install proto test test-fast run model model-check bench examples clean report redis-server retrain-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned to the CPU wheel on disk; a looser spec would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q 'torch==2.13.0'
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	# lm-eval only for its task-config YAMLs (bench templates); its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps 'lm-eval==0.4.13'
	rm -f $(VENV)/.installed-*
	touch $@

# Regenerate the committed gRPC stubs from proto/ after editing a .proto (commit the result;
# tests/test_proto.py fails while they differ).
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

test: install redis-server
	$(BIN)/python -m pytest -q

# The edit-test loop: everything but the tests marked slow (training runs, Ray, load), <= 3 min.
test-fast: install redis-server
	$(BIN)/python -m pytest -q -m "not slow"

# The Redis session-store tests start a real redis-server (Debian's) on a free loopback
# port; installed only when missing. Without it those tests fail, they do not skip.
redis-server:
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)

# Main job, on demo traffic simulated with another seed than the training data:
# serve the default bundle over gRPC and replay the traffic through it, then batch-score
# and evaluate the same file offline.
run: install
	test -f $(BUNDLE)/model.onnx || $(MAKE) model
	$(BIN)/distillguard simulate --seed 7 --events 100000 --out data/demo
	BIN=$(BIN) scripts/run_demo.sh data/demo/events.parquet
	$(BIN)/distillguard score --model $(BUNDLE) --input data/demo/events.parquet --output data/demo/scores.parquet
	$(BIN)/distillguard evaluate --model $(BUNDLE) --events data/demo/events.parquet --labels data/demo/labels.csv --report reports/demo -q
	@echo "scores: data/demo/scores.parquet   report: reports/demo/report.md   server log: data/demo/serve.log"

model: install
	$(BIN)/distillguard train $(MODEL_ARGS) --out $(BUNDLE) --checkpoint-dir runs/default-checkpoints

# `make model` reproducibility: train the default model again (runs/model-check) and compare
# it with the committed bundle by graph, initializer bytes, ORT outputs on a fixed batch and
# version (scripts/check_bundle.py); fails when they differ. The directory does not matter.
model-check: install
	rm -rf runs/model-check
	$(BIN)/distillguard train $(MODEL_ARGS) --out runs/model-check/bundle --checkpoint-dir runs/model-check/ckpt -q
	$(BIN)/python scripts/check_bundle.py $(BUNDLE) runs/model-check/bundle

bench: install
	test -f $(BUNDLE)/model.onnx || $(MAKE) model
	# h2load (Debian's nghttp2-client) is the native gRPC load generator; installed only when missing.
	command -v h2load >/dev/null || (apt-get update && apt-get install -y nghttp2-client)
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
	# Batch scoring, local vs Ray engine on the same file (bench/batch_bench.json); gRPC scorer vs
	# no-op (bench/grpc_bench.json); bytes per live session.
	$(BIN)/distillguard bench batch --ray --model $(BUNDLE) --events 1000000
	$(BIN)/distillguard bench grpc --model $(BUNDLE)
	# Frame signatures on lm-eval's real templates, the half of the task families not tuned on.
	$(BIN)/distillguard bench templates --collection report
	$(BIN)/distillguard bench state
	# Soak (bench/soak.json): a real server on loopback for 90 s at 0.5x..4x capacity with session churn;
	# served/shed/failed RPCs and server RSS over time (fails only if the server crashes).
	$(BIN)/distillguard bench soak --seconds 90 --model $(BUNDLE)
	# Scaling (bench/scaling_bench.json): 1 vs 2 scorer processes (serve --workers) on the in-process
	# store and on a throwaway redis-server; qps per busy core, p99 at half peak, Redis share of latency.
	$(BIN)/distillguard bench scaling --model $(BUNDLE)
	# Shadow model cost (bench/shadow_bench.json): the in-process scorer with vs without a second bundle.
	$(BIN)/distillguard bench shadow --model $(BUNDLE)
	# Cost of faithful reasons (bench/verdicts_bench.json): occlusion explanations vs rule checks.
	$(BIN)/distillguard bench verdicts --model $(BUNDLE)
	@echo "== training time and peak memory of the default model (fresh run into bench/model)"
	/usr/bin/env time -v $(BIN)/distillguard train $(MODEL_ARGS) --out bench/model --checkpoint-dir bench/ckpt -q 2>&1 \
	  | grep -E "bundle written|macro-F1|Maximum resident|Elapsed" || true

# Every table of the README (~25 min on 2 cores; not part of `make test`): held-out families,
# cross-generator (the shipped model on the independent generator B; the recipe trained on B
# scored on A), the field-shift audit (on A's and B's humans), robustness to attacker knobs,
# in-distribution metrics with calibration; then one HTML page and the README's tables.
report: install
	$(BIN)/distillguard evaluate holdout --out reports/holdout
	$(BIN)/distillguard evaluate cross --model $(BUNDLE) --out reports/cross_generator
	$(BIN)/distillguard evaluate shift --model $(BUNDLE) --simulate 16500 --seed 17 --out reports/shift_audit
	$(BIN)/distillguard evaluate shift --model $(BUNDLE) --events reports/cross_generator/data/test_b/events.parquet \
	  --labels reports/cross_generator/data/test_b/labels.csv --out reports/shift_audit_b
	$(BIN)/distillguard evaluate robustness --model $(BUNDLE) --out reports/robustness
	$(BIN)/distillguard simulate --seed 13 --events 400000 --out data/eval
	$(BIN)/distillguard evaluate --model $(BUNDLE) --events data/eval/events.parquet --labels data/eval/labels.csv --report reports/eval -q
	$(BIN)/python -c "from pathlib import Path; from distillguard.training.html_report import write_html; \
	  print(write_html([Path(p) for p in ('reports/cross_generator/cross_generator.md', 'reports/eval/report.md', \
	  'reports/holdout/holdout.md', 'reports/shift_audit/shift_audit.md', 'reports/shift_audit_b/shift_audit.md', \
	  'reports/robustness/robustness.md')], Path('reports/report.html')))"
	$(BIN)/python scripts/readme_tables.py --reports reports --readme README.md

clean:
	rm -rf data reports runs bench lightning_logs

examples: install
	$(BIN)/python scripts/make_examples.py

# The retraining loop end to end (demos/retrain_demo.py): v1 misses a new harvesting
# family live, the incident is labelled, v2 trains on the event log, runs as shadow, beats
# v1 on a frozen holdout, is promoted and hot-reloaded by the running server. ~4 min.
retrain-demo: install
	rm -rf data/retrain-demo
	$(BIN)/python -m distillguard.demos.retrain_demo --workdir data/retrain-demo
