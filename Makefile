# Two entry points (see README): `make digits` runs the main recipe, `make test` runs the tests
# (`make yesno` is a one-minute sanity check; `make arctic` the English read-speech recipe).
# Each creates / updates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: digits yesno arctic test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

digits: $(STAMP)
	egs/digits/run.sh

yesno: $(STAMP)
	egs/yesno/run.sh

arctic: $(STAMP)
	egs/arctic/run.sh

test: $(STAMP)
	$(VENV)/bin/ruff check ctcasr tests egs benchmarks
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) egs/*/data egs/*/exp
