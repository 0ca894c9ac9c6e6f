#!/usr/bin/env bash
# Stop what scripts/demo.sh started (web server, Celery worker and beat). Databases keep running.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in web worker beat; do
  pidfile=var/run/$name.pid
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "stopping $name (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
done
