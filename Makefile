# socialmatch: the two commands a newcomer needs are `make demo` and `make test`.
PY := .venv/bin/python
export PGPASSWORD := postgres

.PHONY: demo stop test provision migrate lint bench-generate bench-serving

demo:  ## start the whole application with demo data, then print the URL and logins
	bash scripts/demo.sh

stop:  ## stop the web server and the Celery worker and beat started by `make demo`
	bash scripts/stop.sh

test: provision  ## provision what is missing, then run the whole test suite
	mkdir -p var
	DJANGO_SETTINGS_MODULE=socialmatch.settings.test $(PY) -m pytest

provision:
	bash scripts/provision.sh

migrate: provision
	$(PY) manage.py migrate --noinput

bench-generate: provision  ## time generate_city at 1,000,000 users (see docs/BENCHMARKS.md)
	bash scripts/bench_generate.sh

bench-serving: provision  ## nearby over HTTP, ranking, ANN and re-embedding at 10k, 100k, 1M people (see docs/BENCHMARKS.md)
	bash scripts/bench_serving.sh
