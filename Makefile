# `make test` is the whole test suite, as CI runs it (.ci/run): it makes its own
# virtualenv in .venv (PYTHON picks the interpreter) and installs the package
# with every extra and the development tools (pyproject.toml's dependency
# groups) there, with Django 5.2 LTS; then it runs the Django tests again with
# Django 6 on Python 3.12 (test-django6), the Celery tests with the oldest
# Celery the package supports (test-celery-floor), psycopg_pool's own tests
# (test-conformance: `make conformance` if their kit is there), Django's own
# tests with django_pgpool (test-django-suite), and the oldest and newest
# supported versions of everything (test-matrix: nox's floor and latest rows).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
BENCH_ARGS ?=

# Django 6 needs Python 3.12+: the first python3.12 that runs, from PATH or
# pyenv (whose shim fails unless 3.12 is selected), unless PYTHON312 is set.
PYTHON312 ?= $(shell for p in python3.12 \
	$$(pyenv root 2>/dev/null)/versions/3.12*/bin/python3.12 \
	$$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1 \
	&& { echo "$$p"; break; }; done)
VENV_DJANGO6 ?= .venv-django6
STAMP_DJANGO6 := $(VENV_DJANGO6)/.installed
# The floor of the celery extra (setup.cfg), for test-celery-floor.
CELERY_FLOOR ?= celery>=5.3,<5.4
VENV_CELERY_FLOOR ?= .venv-celery-floor
STAMP_CELERY_FLOOR := $(VENV_CELERY_FLOOR)/.installed
STAMP_BENCH := $(VENV)/.installed-bench
STAMP_DEMO := $(VENV)/.installed-demo
# Every extra: the tests serve the apps with each server.
EXTRAS := binary,flask,django,uwsgi,gunicorn,celery,opentelemetry,prometheus,health-check

.PHONY: test lint docs pytest test-django6 test-celery-floor conformance \
	test-conformance test-django-suite test-matrix install clean demo bench \
	bench-quick

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]' --group dev 'Django>=5.2,<6'
	touch $(STAMP)

$(STAMP_DJANGO6): setup.cfg pyproject.toml
	@test -n "$(PYTHON312)" || { echo "no Python 3.12 found for the Django 6" \
		"tests: set PYTHON312=/path/to/python3.12" >&2; exit 1; }
	$(PYTHON312) -m venv $(VENV_DJANGO6)
	$(VENV_DJANGO6)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_DJANGO6)/bin/python -m pip install --quiet -e '.[$(EXTRAS)]' --group test \
		'Django>=6,<7'
	touch $(STAMP_DJANGO6)

$(STAMP_CELERY_FLOOR): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV_CELERY_FLOOR)
	$(VENV_CELERY_FLOOR)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_CELERY_FLOOR)/bin/python -m pip install --quiet \
		-e '.[binary,django,celery]' --group test 'Django>=5.2,<6' '$(CELERY_FLOOR)'
	touch $(STAMP_CELERY_FLOOR)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Django tests on Django 6.x and Python 3.12.
test-django6: $(STAMP_DJANGO6)
	$(VENV_DJANGO6)/bin/python -m pytest tests/django $(PYTEST_ARGS)

# The documentation (docs/), warnings as errors, every reference resolved.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going --nitpicky -q -b html docs docs/_build/html

# psycopg_pool's own pool tests against ForkSafePool, compared with the list
# of allowed failures (tests/conformance/). psycopg's files live outside the
# repository: PGPOOL_CONFORMANCE_KIT, else shared/conformance/psycopg-pool
# beside the checkout or beside one of its parent folders. Without the kit it
# fails, saying so.
conformance: $(STAMP)
	$(BIN)/python -m tests.conformance.psycopg_pool

# The same in `make test`: without the kit (a fresh clone) it says they were
# not run and passes, except under CI=true.
test-conformance: $(STAMP)
	$(BIN)/python -m tests.conformance.psycopg_pool --if-present

# The Celery tests with the oldest Celery of the celery extra (5.3).
test-celery-floor: $(STAMP_CELERY_FLOOR)
	$(VENV_CELERY_FLOOR)/bin/python -m pytest tests/celery $(PYTEST_ARGS)

# Django's own tests (tests/runtests.py of the installed Django's sdist, kept in
# the virtualenv) with django_pgpool: the modules a backend can break and the
# ORM's SQL, compared with tests/django_suite/known_failures.txt and
# differences.txt. `nox -s django_suite` runs more of them, with Django's
# backend too, on Django 5.2 and 6.
test-django-suite: $(STAMP)
	$(BIN)/python -m tests.django_suite.run --modules ci

# Python 3.10 with the lowest version of each dependency setup.cfg allows, and
# Python 3.13 with the newest (noxfile.py; `nox -l` lists the whole matrix).
test-matrix: $(STAMP)
	$(BIN)/nox --reuse-existing-virtualenvs --sessions floor latest

test: lint docs pytest test-django6 test-celery-floor test-conformance \
	test-django-suite test-matrix

clean:
	rm -rf $(VENV) $(VENV_DJANGO6) $(VENV_CELERY_FLOOR) .nox build dist *.egg-info \
		docs/_build

# The bug and the fix side by side, on a throwaway TLS PostgreSQL (or the
# server DATABASE_URL names), under uWSGI in preload mode. Installs only what
# the demo needs (uWSGI builds from source: a C compiler, the Python headers).
$(STAMP_DEMO): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[binary,flask,uwsgi]'
	touch $(STAMP_DEMO)

demo: $(STAMP_DEMO)
	$(BIN)/python example_projects/demo.py

$(STAMP_BENCH): $(STAMP)
	$(BIN)/python -m pip install --quiet --group bench 'Django>=5.2,<6'
	touch $(STAMP_BENCH)

# pgpool next to what users would pick instead, on a throwaway TLS PostgreSQL:
# each contender under gunicorn (4 sync workers, preload), loaded by wrk if it
# is on PATH (Debian: apt-get install wrk) or by benchmarks/loadgen.py, in many
# short rounds that interleave the contenders, on loopback and through a proxy
# that delays each way; each adapter in one process (cost and round trips per
# request); uWSGI memory and respawn. About 10 minutes; prints a table with
# the targets, writes benchmarks/results.json and benchmarks/results.png.
# Options go through BENCH_ARGS, e.g. make bench BENCH_ARGS="--only django,micro".
bench: $(STAMP_BENCH)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# The same, once and briefly (under a minute): a smoke test, not a measurement.
bench-quick: $(STAMP_BENCH)
	$(BIN)/python benchmarks/run.py --quick
