# The two commands a fresh machine needs: `make demo` and `make test`. Each installs what it needs.
.PHONY: setup demo test bench clean

setup:
	bash scripts/bootstrap.sh

demo: setup
	.venv/bin/heygem demo --out demo

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python benchmarks/render_speed.py

clean:
	rm -rf demo .pytest_cache
