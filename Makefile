# Two entry points: `make demo` (install, load the CDNOW demo, serve) and
# `make test` (install, run the suite on SQLite). See README.md.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PORT ?= 8000
DATA := data
LIFETIMES_WHEEL := $(DATA)/Lifetimes-0.11.3-py3-none-any.whl
CDNOW := $(DATA)/CDNOW_master.txt
# The CDNOW log is in US dollars, and its dates are moved forward by whole years.
DEMO_ENV := CRM_CURRENCY=USD CRM_DATA_NOTICE="演示数据：CDNOW 购买记录 1997–1998（P. Fader 与 B. Hardie），日期按整年后移至今天之前。Demo data: the CDNOW purchase log, 1997–1998 (P. Fader and B. Hardie), with dates moved forward by whole years to end before today."

.PHONY: demo test install install-dev lint typecheck check clean-demo

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt $(VENV)/.installed
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

$(LIFETIMES_WHEEL):
	mkdir -p $(DATA)
	$(PIP) download --quiet --no-deps --dest $(DATA) lifetimes==0.11.3

demo: $(VENV)/.installed $(LIFETIMES_WHEEL)
	$(PY) manage.py migrate --noinput
	$(DEMO_ENV) $(PY) manage.py load_demo --wheel $(LIFETIMES_WHEEL) --port $(PORT)
	@echo "Starting the django-q2 job cluster beside the web server."
	$(DEMO_ENV) $(PY) manage.py qcluster & cluster=$$!; \
	trap 'kill $$cluster 2>/dev/null' EXIT INT TERM; \
	$(DEMO_ENV) $(PY) manage.py runserver 127.0.0.1:$(PORT)

test: $(VENV)/.installed-dev
	$(VENV)/bin/pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy crm members tiers benefits

check: lint typecheck test

clean-demo:
	rm -f db.sqlite3 $(DATA)/cdnow_*.csv
