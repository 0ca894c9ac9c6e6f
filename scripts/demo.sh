#!/usr/bin/env bash
# Start the whole application with demo data: provision, migrate, generate a city, demo logins,
# train a first model, start the web server, a Celery worker and Celery beat, then compute
# embeddings and the nearest-neighbour index on the worker. Safe to re-run: each step checks first.
set -euo pipefail

cd "$(dirname "$0")/.."
export DJANGO_SETTINGS_MODULE=${DJANGO_SETTINGS_MODULE:-socialmatch.settings.local}
DEMO_USERS=${DEMO_USERS:-3000}
DEMO_SEED=${DEMO_SEED:-7}
WEB_HOST=${WEB_HOST:-127.0.0.1}
WEB_PORT=${WEB_PORT:-8000}
RUN=var/run
LOGS=var/log
PY=.venv/bin/python

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }

bash scripts/provision.sh
mkdir -p "$RUN" "$LOGS"

log "migrating the database"
$PY manage.py migrate --noinput

if $PY manage.py shell -c "import sys; from users.models import User; sys.exit(0 if User.objects.filter(username__startswith='demo').exists() else 1)"; then
  log "demo city already generated"
else
  log "generating a demo city of $DEMO_USERS people (seed $DEMO_SEED)"
  $PY manage.py generate_city --users "$DEMO_USERS" --seed "$DEMO_SEED" --prefix demo
fi

log "demo logins"
ACCOUNTS=$($PY manage.py demo_accounts)

# A short schedule keeps the demo quick (about a minute); `manage.py train_model` trains fully.
log "training a first model (skipped when one is active)"
$PY manage.py train_model --if-none --activate --epochs 8 --folds 1

running() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }
start() {
  local name=$1; shift
  if running "$name"; then
    log "$name already running (pid $(cat "$RUN/$name.pid"))"
    return
  fi
  log "starting $name (log: $LOGS/$name.log)"
  nohup "$@" >"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
}
start web $PY manage.py runserver --noreload "$WEB_HOST:$WEB_PORT"
start worker .venv/bin/celery -A socialmatch worker --loglevel=INFO --concurrency=2 -n "demo@%h" \
    -Q "${CELERY_TASK_DEFAULT_QUEUE:-celery},${CELERY_BULK_QUEUE:-bulk}"
start beat .venv/bin/celery -A socialmatch beat --loglevel=INFO --pidfile=

log "computing embeddings and the index on the worker"
$PY manage.py rebuild_embeddings --wait 300

URL="http://$WEB_HOST:$WEB_PORT"
log "waiting for $URL/health/"
healthy() {
  $PY -c "import sys, urllib.request as r; sys.exit(0 if r.urlopen('$URL/health/', timeout=5).status == 200 else 1)" 2>/dev/null
}
for _ in $(seq 1 60); do healthy && break; sleep 1; done
if ! healthy; then
  $PY -c "import urllib.request as r, urllib.error as e
try: print(r.urlopen('$URL/health/', timeout=5).read().decode())
except e.HTTPError as err: print(err.read().decode())" || true
  echo "socialmatch did not become healthy; see $LOGS/" >&2
  exit 1
fi

cat <<MSG

socialmatch is running at $URL/
  people nearby: $URL/people/   activities: $URL/activities/   invitations: $URL/invitations/
  admin:    $URL/admin/
  API docs: $URL/api/docs/
  health:   $URL/health/
Demo logins:
$ACCOUNTS
Stop it with: make stop
MSG
