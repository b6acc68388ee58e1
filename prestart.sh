#!/usr/bin/env bash
# Sourced by the image's /start.sh before supervisord starts uWSGI and nginx (and by the
# staged-layout test, with FORECAST_IMAGE_ROOT pointing at its staging directory).
# 1. checks the settings against uwsgi.ini (the mules) and nginx.conf (the deadline below harakiri and
#    nginx's read timeout), exports the FORECAST_* sizes uwsgi.ini reads (serving/settings.py's defaults, overridden by
#    the environment), UWSGI_LISTEN and PROMETHEUS_MULTIPROC_DIR (emptied); 2. keeps the image's
#    own UWSGI_* defaults in step with them; 3. if the registry (a volume) is empty,
#    imports FORECAST_LEGACY_REGISTRY_URL's model when set, else trains one (python -m forecast bootstrap);
#    4. renders /app/nginx.conf into /etc/nginx/nginx.conf.
# Any failure exits: the container stops instead of serving half-configured.
forecast_root="${FORECAST_IMAGE_ROOT:-}"
forecast_die() { echo "prestart.sh: $*" >&2; exit 1; }

forecast_exports="$(cd "$forecast_root/app" && python -m serving.settings --ini "$forecast_root/app/uwsgi.ini" \
    --nginx-conf "$forecast_root/app/nginx.conf")" \
    || forecast_die "bad FORECAST_* settings, or uwsgi.ini or nginx.conf does not match them"
eval "$forecast_exports"
# prometheus_client's multiprocess files: one directory for the whole uWSGI tree, empty at start.
mkdir -p "$PROMETHEUS_MULTIPROC_DIR" && find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -delete \
    || forecast_die "cannot prepare $PROMETHEUS_MULTIPROC_DIR"
# uWSGI reads UWSGI_* variables as options too; the image sets UWSGI_PROCESSES=16 and cheaper mode.
export UWSGI_PROCESSES="$FORECAST_UWSGI_PROCESSES" UWSGI_THREADS="$FORECAST_UWSGI_THREADS" UWSGI_CHEAPER=0

(cd "$forecast_root/app" \
    && FORECAST_DATA_PATH=/tmp/forecast-data/train.csv python -m forecast bootstrap \
    && rm -rf /tmp/forecast-data) || forecast_die "no model in $FORECAST_REGISTRY_DIR, and neither an import nor training gave one"

mkdir -p "$forecast_root/var/run/forecast"
(cd "$forecast_root/app" && python -m serving.nginx_conf "$forecast_root/app/nginx.conf" \
    "$forecast_root/etc/nginx/nginx.conf" \
    "user=user ${NGINX_USER:-nginx};" \
    "run_dir=$forecast_root/var/run/forecast" \
    "error_log=/dev/stderr" \
    "listen=${LISTEN_PORT:-80}" \
    "uwsgi_socket=$forecast_root/tmp/uwsgi.sock" \
    "access_log=/dev/stdout" \
    "log_format=${FORECAST_LOG_FORMAT:-text}") || forecast_die "cannot render nginx.conf"
# (FORECAST_LOG_FORMAT was validated by `python -m serving.settings` above; text is its default.)
