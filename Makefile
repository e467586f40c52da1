# Two entry points (see README): `make digits` runs the main recipe, `make test` runs the tests
# (`make yesno` is a one-minute sanity check; `make arctic` English read speech, one speaker;
# `make speechocean` English read by 188 speakers, children and adults).
# Each creates / updates the virtual environment it needs, with exactly the versions of
# requirements.txt (every transitive dependency, hashed). `make lock` remakes the lock.
# PYTHON: python3.11 when there is one, else python3 (checked to be 3.11 or newer).
PYTHON ?= $(or $(shell command -v python3.11),python3)
VENV := .venv
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.9
PIP = $(VENV)/bin/pip install --quiet --disable-pip-version-check

.PHONY: browser digits digits-transfer yesno arctic speechocean test lint bench-decode bench-speechbrain bench-espnet clean lock

# From the hashed lock only: nothing unpinned is ever installed. uv (its locked release, itself
# installed by pip with its hashes) is ~5x faster than pip; USE_UV=0, or any uv failure, falls
# back to the pip that comes with Python. Both compile the bytecode at install: where
# PYTHONDONTWRITEBYTECODE is set, a venv without it compiles torch anew in every process (7 s
# instead of 4 to import it here).
USE_UV ?= 1
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo \
	    "ctcasr needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1): make PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	awk '/^uv==/ {p = 1; print; next} /^[a-z]/ {p = 0} p' requirements.txt > $(VENV)/uv.txt
	if [ "$(USE_UV)" = 1 ] && $(PIP) --require-hashes -r $(VENV)/uv.txt && \
	    $(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python --require-hashes \
	    --compile-bytecode -r requirements.txt; then :; else \
	    echo "installing with pip (slower)"; $(PIP) --require-hashes -r requirements.txt; fi
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Corpora: each recipe looks for its corpus in $(CTCASR_DATA)/NAME (fsdd, speechocean762,
# arctic, yesno, LibriSpeech) and downloads what is not there, once, into $(CTCASR_DOWNLOADS)
# (default ~/.cache/ctcasr/corpora). The default CTCASR_DATA is a folder of corpora beside the
# checkout, if there is one; `make digits CTCASR_DATA=/my/corpora` points elsewhere.
export CTCASR_DATA ?= $(abspath ../shared/data)

# The main job: egs/digits/transfer.sh, a short English model first (the speechocean recipe with
# ARCTIC, 118 voices; kept when it exists), then connected digits fine-tuned from it, ending in
# the WER table of docs/results.md.
digits: $(STAMP)
	egs/digits/transfer.sh

# The best digits model on unseen voices, in two steps (about 70 minutes on 2 cores): the
# speechocean English model of `make speechocean` (phones + SC-CTC, egs/speechocean/conf/
# lstm_phone.yaml, about an hour; kept when it exists), then digits fine-tuned from it with
# speechocean's digit strings in training (5-15 minutes; the digits are learnt as phones).
SO_MODEL := egs/speechocean/exp/lstm_phone/model.pt
digits-transfer: $(STAMP)
	[ -f $(SO_MODEL) ] || egs/speechocean/run.sh --config conf/lstm_phone.yaml --stop-stage 4
	egs/digits/run.sh --config conf/lstm16k_ft.yaml --init ../../$(SO_MODEL) --exp transfer

yesno: $(STAMP)
	egs/yesno/run.sh

arctic: $(STAMP)
	egs/arctic/run.sh

speechocean: $(STAMP)
	egs/speechocean/run.sh

test: $(STAMP) browser
	$(VENV)/bin/ruff check ctcasr tests egs benchmarks
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile -m "not alone"
	$(VENV)/bin/python -m pytest -q -m alone

# Headless Chromium for tests/test_browser.py (the page recorded through a fake microphone), from
# Debian's packages when it is missing and this is a root shell with apt-get; otherwise that
# test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (Debian) for the browser test"; \
	    (timeout 60 apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 150 \
	        apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null) || \
	    echo "could not install chromium: tests/test_browser.py will skip"; \
	else echo "no chromium (apt-get install chromium chromium-driver): the browser test skips"; fi

# benchmarks/decode_speed.py with the decoders it compares against, in their own venv (the
# lock plus pyctcdecode, flashlight-text and kenlm; kenlm builds with a C++ compiler and cmake;
# pyctcdecode asks for numpy < 2 but runs with the locked numpy, so it goes in without its deps).
BENCH := .venv-bench
$(BENCH)/.installed: $(STAMP)
	$(PYTHON) -m venv $(BENCH)
	$(VENV)/bin/uv pip install --quiet --python $(BENCH)/bin/python --require-hashes \
	    -r requirements.txt
	$(VENV)/bin/uv pip install --quiet --python $(BENCH)/bin/python --no-deps \
	    pyctcdecode==0.5.0 pygtrie==2.5.0 flashlight-text==0.0.7 kenlm==0.3.0
	$(BENCH)/bin/pip install --quiet --disable-pip-version-check --no-deps \
	    --no-build-isolation -e .
	touch $@

bench-decode: $(BENCH)/.installed
	$(BENCH)/bin/python benchmarks/decode_speed.py $(ARGS)

# SpeechBrain trained and scored on the speechocean split under `make speechocean`'s budget
# (~70 min; needs the speechocean data: `make speechocean` first). SpeechBrain goes
# into its own .venv-sb, from its own hashed lock, never into .venv.
bench-speechbrain: $(STAMP)
	bash benchmarks/peers/speechbrain/run.sh $(ARGS)

# ESPnet2's CTC-only Conformer on the same split, under the same budget (~75 min;
# needs the speechocean data). ESPnet goes into its own .venv-espnet, from its own hashed lock.
bench-espnet: $(STAMP)
	bash benchmarks/peers/espnet/run.sh $(ARGS)

# Re-resolve pyproject.toml (all platforms, Python 3.11+) into requirements.txt, the lock (and
# the same pins as PEP 751 pylock.toml, for tools that read that; tests/test_lock.py), with
# uv (a pinned release, in its own throw-away venv; only this target needs it). Versions already
# in the lock are kept while they satisfy the ranges; `make lock UPGRADE=1` takes the newest.
lock:
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	.lock-venv/bin/uv pip compile --quiet pyproject.toml --extra dev --universal --generate-hashes \
	    --python-version 3.11 --no-header $(if $(UPGRADE),--upgrade) -o requirements.txt
	.lock-venv/bin/uv pip compile --quiet requirements.txt --universal --python-version 3.11 \
	    --no-header --format pylock.toml -o pylock.toml
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) $(BENCH) .venv-sb .venv-espnet egs/*/data egs/*/exp benchmarks/peers/exp
