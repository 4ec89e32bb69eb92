# The two commands a fresh machine needs: `make serve` and `make test`. Each installs what it needs.
.PHONY: setup serve demo test bench clean

setup:
	bash scripts/bootstrap.sh

# The service on embedded defaults (SQLite, local files, worker threads), with a token to try it.
serve: setup
	@echo "API token for tenant 'demo' (30 days):"
	@.venv/bin/heygem token create --tenant demo --ttl 30d 2>/dev/null
	.venv/bin/heygem serve

demo: setup
	.venv/bin/heygem demo --out demo

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python benchmarks/render_speed.py

clean:
	rm -rf demo .pytest_cache
