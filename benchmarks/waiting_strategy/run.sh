#!/usr/bin/env bash
# Measure (a) polling the uWSGI cache with sleeps vs (b) sleeping on a datagram socket the mule
# writes to, with a ~0 ms and a 5 ms "model". Needs wrk (apt-get install wrk) and the project venv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$here/../../.venv}
"$venv/bin/uwsgi" --ini "$here/uwsgi.ini" --daemonize2 /tmp/waiting-strategy-uwsgi.log
trap 'kill "$(cat /tmp/waiting-strategy-uwsgi.pid)"' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:9101/hello >/dev/null && break; sleep 0.2; done
for path in /hello "/a?d=0" "/b?d=0" "/a?d=5" "/b?d=5"; do
  "$venv/bin/python" "$here/bench.py" 9101 "$path" /tmp/waiting-strategy-uwsgi.pid 2000 16
done
