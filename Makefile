# The whole set-up is `make run` and `make test`; each makes .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PO := $(wildcard locale/*/LC_MESSAGES/messages.po)
MO := $(PO:.po=.mo)

.PHONY: run test bench catalogs clean

run: $(STAMP) $(MO)
	$(BIN)/kentongan serve

test: $(STAMP) $(MO)
	$(BIN)/pytest

bench: $(STAMP) $(MO)
	$(BIN)/python tests/bench/table.py $(BENCH_FLAGS)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Catalogs are compiled by the build and never committed.
locale/%/LC_MESSAGES/messages.mo: locale/%/LC_MESSAGES/messages.po $(STAMP)
	$(BIN)/pybabel compile -l $* -i $< -o $@

# After changing a menu or a message in the code: refresh the template and
# every catalog, then translate what `pybabel update` left empty.
catalogs: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg --no-location --omit-header -w 100 -o locale/messages.pot .
	$(BIN)/pybabel update --no-fuzzy-matching --ignore-obsolete -w 100 -i locale/messages.pot -d locale

clean:
	rm -rf $(VENV) var $(MO)
