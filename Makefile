# RegLab: every target sets itself up (local venv in .venv, torch pinned by constraints.txt).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
PORT    ?= 8501
JOBS    ?= 2

.PHONY: setup kernels app test lint test-slow test-browser test-all bench bench-env browser-deps clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

## Compile the numba kernels into their on-disk cache (~15 s once; ~1 s when already cached), and the
## project's bytecode: an editable install is not byte-compiled, and where PYTHONDONTWRITEBYTECODE is set
## (common in containers) every process would compile regcore from source (~0.15 s of each start).
kernels: $(STAMP)
	$(VPY) -m compileall -q regcore pages app.py
	$(VPY) -m regcore.compile_kernels

setup: kernels

## Start the dashboard on the built-in sample data (built on first use).
app: kernels
	$(VPY) -m regcore.data.samples --quiet
	$(VPY) -m pages._serve --server.port $(PORT) --server.headless true

## Default test suite (fast): unit + AppTest + one short real registration per method.
test: kernels
	$(VPY) -m pytest -q -n $(JOBS) -m "not slow and not browser"

## House rules: ruff lint + format check (line length 110) and the mypy type check (config in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## Slow tests: longer real registrations and training runs.
test-slow: kernels
	$(VPY) -m pytest -q -n $(JOBS) --dist loadfile -m "slow and not browser"
	$(VPY) -m pytest -q -p no:cacheprovider --nbmake notebooks/

## Browser test: Playwright drives `streamlit run` in Debian's chromium.
browser-deps:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test-browser: kernels browser-deps
	$(VPY) -m pytest -q -m browser

test-all: test test-slow test-browser

## Benchmarks (scripts, not tests): results land in benchmarks/results/.
bench: kernels
	$(VPY) benchmarks/warp.py

## Separate environment for heavy baselines (antspyx pins numpy<2.4; itk-elastix).
bench-env:
	@test -x .venv-bench/bin/python || $(PY) -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q -c constraints.txt -e '.[dev,elastix,ants]' 'numpy<2.4'

clean:
	rm -rf $(VENV) .venv-bench sample_data/*/ .pytest_cache
