# Two commands set everything up: `make demo` and `make test`. Both create .venv when absent.
PY := .venv/bin/python
VENV_STAMP := .venv/.installed

.PHONY: demo test lint bench clean-venv

$(VENV_STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first: the pair that installs and runs on these machines (see DEVELOPERS.md)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(VENV_STAMP)

demo: $(VENV_STAMP)
	.venv/bin/visbricks demo

lint: $(VENV_STAMP)
	.venv/bin/ruff check visbricks tests bench

test: $(VENV_STAMP) lint
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests

# depth_errors.py and depth_pose.py analyse a run you name (--run), so they are left out here.
ANALYSES := bench/depth_errors.py bench/depth_pose.py
bench: $(VENV_STAMP)
	for f in $(filter-out $(ANALYSES),$(wildcard bench/*.py)); do echo "== $$f"; $(PY) $$f || exit 1; done

clean-venv:
	rm -rf .venv
