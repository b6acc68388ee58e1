#!/usr/bin/env sh
# The base image's /start.sh: source the app's prestart.sh (next to UWSGI_INI, else /app/prestart.sh),
# then exec supervisord, which starts uWSGI and nginx.
set -e
PRE_START_PATH=/app/prestart.sh
if [ -n "$UWSGI_INI" ] && [ -f "$(dirname "$UWSGI_INI")/prestart.sh" ]; then
    PRE_START_PATH="$(dirname "$UWSGI_INI")/prestart.sh"
fi
echo "Checking for script in $PRE_START_PATH"
if [ -f "$PRE_START_PATH" ]; then
    echo "Running script $PRE_START_PATH"
    # shellcheck disable=SC1090
    . "$PRE_START_PATH"
else
    echo "There is no script $PRE_START_PATH"
fi
exec /usr/bin/supervisord
