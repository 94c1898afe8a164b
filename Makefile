# The two set-up commands of the README: `make sandbox` and `make test`.
# Both install what they need first (apt packages, .venv, pip extras) through scripts/bootstrap.sh.
VENV := .venv
PY := $(VENV)/bin/python
TYPED := osm_trustmgr

.PHONY: bootstrap sandbox test lint typecheck pytest bench clean

bootstrap:
	./scripts/bootstrap.sh

sandbox: bootstrap
	$(VENV)/bin/osm-trustmgr sandbox --vnf

test: bootstrap lint typecheck pytest

lint:
	$(VENV)/bin/ruff check osm_trustmgr tests bench charms
	$(VENV)/bin/ruff format --check osm_trustmgr tests bench charms

typecheck:
	$(VENV)/bin/mypy --strict $(TYPED)

pytest:
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: bootstrap
	@for b in bench/*.py; do echo "# $$b" >&2; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
