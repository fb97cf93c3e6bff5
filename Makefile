# Scalable Batch Inference with Ray: one command to learn, one to test.
#   make lab    set up .venv and open JupyterLab on notebooks/00_overview.ipynb
#   make test   set up .venv and run every test, failing fast: lint and the unit tests that start
#               nothing (make test-unit), then every notebook under nbval (make test-notebooks),
#               then the tests that start Ray, the job or a two-node cluster (make test-ray)
#   make run    execute every notebook headless, timed beside the workshop check's estimate;
#               executed copies and timings.md land in build/executed/
#   make prefetch  download the model and test images for an offline workshop
#   make bench  measure every approach at 10, 100 and 1000 images; results in results/
#   make bench-memory  the production job on 10,000 images: peak memory of the whole run
#   make test-cluster  a real two-node Ray cluster on this machine (token auth); notebooks 03 and 05 on it
#                  (make test runs the same cluster tests without the notebooks)
#   make test-gpu      every notebook on a CUDA GPU; without one it says so, runs nothing, exits 77
#   make test-browser  make lab's JupyterLab in headless Chromium: notebooks 00 and 02 run from the
#                  Run menu, no errors, diagrams and plots load; the dashboard opens with the token
#                  (installs Playwright; Chromium as root)
#   make check-workshop  offline readiness check: packages, model, images, Ray, a 10-image timing
#   make exercises  after editing notebooks/solutions/: write the learner copies in notebooks/
#   make format  format and lint-fix the whole tree (what the pre-commit hooks do)
#   make hooks   install the pre-commit hooks for contributors

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
# Tests use few images so the whole suite stays fast; learners get the default (160).
TEST_IMAGES ?= 8

.PHONY: setup lab test test-unit test-notebooks test-ray test-cluster test-gpu test-browser run
.PHONY: prefetch exercises
.PHONY: check-workshop bench bench-memory segment lint format hooks diagrams clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13), \
		f"Python 3.11 to 3.13 is needed, this is {sys.version.split()[0]}"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $@

# Containers and cloud VMs often run as root, which Jupyter refuses without --allow-root; the
# server stays on 127.0.0.1 with token authentication either way.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)
# Rooted at the repository, so the notebooks' diagrams (../assets) load; opens the first notebook.
LAB_ARGS := --notebook-dir=. --LabApp.default_url=/lab/tree/notebooks/00_overview.ipynb \
	--ip=127.0.0.1 --no-browser
lab: setup
	$(BIN)/jupyter lab $(LAB_ARGS) $(ALLOW_ROOT)

test: test-unit test-notebooks test-ray

# Seconds, no Ray: lint, formatting, and every unit test that starts nothing. Stops at the
# first failure, so a broken helper is reported before the slow stages begin.
test-unit: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest tests -m "not slow and not cluster and not browser" -x

test-notebooks: setup
	COURSE_NUM_IMAGES=$(TEST_IMAGES) $(BIN)/python -m pytest notebooks --nbval-lax --durations=10

test-ray: setup
	COURSE_NUM_IMAGES=$(TEST_IMAGES) $(BIN)/python -m pytest tests \
		-m "(slow or cluster) and not cluster_notebooks" --durations=10

test-cluster: setup
	$(BIN)/python -m pytest tests -m cluster

test-gpu: setup
	PYTHON=$(BIN)/python scripts/test_gpu.sh

# Not part of `make test`: Playwright (pinned in pyproject's `browser` extra) drives the
# system's Chromium (Playwright's own browser download is not used), installed with apt-get
# when missing and run as root. Elsewhere: make test-browser CHROMIUM=/path/to/chromium
CHROMIUM ?= /usr/bin/chromium
BROWSER_STAMP := $(VENV)/.browser-$(shell cksum < pyproject.toml | cut -d' ' -f1)
$(BROWSER_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[browser]'
	rm -f $(VENV)/.browser-*
	touch $@

test-browser: setup $(BROWSER_STAMP)
	@if [ ! -x $(CHROMIUM) ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
		else \
			echo "make test-browser needs Chromium at $(CHROMIUM). Install it, then run this again:" >&2; \
			echo "  Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y chromium" >&2; \
			exit 1; \
		fi; \
	fi
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest tests -m browser --durations=5

check-workshop: setup
	$(BIN)/python -m utils.tools.workshop_check

# make segment SOURCE=~/photos OUT=~/masks
segment: setup
	$(BIN)/python -m utils.segment "$(SOURCE)" --out "$(OUT)"

# Every notebook in course order, the solution where a notebook has exercises.
run: setup
	$(BIN)/python -m utils.tools.run_notebooks --out build/executed

prefetch: setup
	$(BIN)/python -m utils.tools.prefetch

# After editing a notebook in notebooks/solutions/: write the learner's copy in notebooks/.
exercises: setup
	$(BIN)/python -m utils.tools.exercises

BENCH_IMAGES ?= 10 100 1000
bench: setup
	$(BIN)/python -m utils.tools.benchmark --images $(BENCH_IMAGES) --out results

JOB_IMAGES ?= 10000
bench-memory: setup
	$(BIN)/python -m utils.tools.benchmark --job-memory $(JOB_IMAGES) --out results

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

hooks: setup
	$(BIN)/python -m pip install --quiet pre-commit==4.7.0 nbstripout==0.9.1
	$(BIN)/pre-commit install

diagrams: setup
	$(BIN)/python assets/make_diagrams.py

clean:
	rm -rf build .pytest_cache .ruff_cache
