# The forecast service on tiangolo/uwsgi-nginx-flask: nginx + uWSGI (supervisord) with our app and mules.
# The base image is deprecated upstream and uWSGI is in maintenance mode: the tag is pinned to a
# dated build (Python 3.12, uWSGI 2.0.31, nginx 1.29) so a rebuild gets the same base.
FROM tiangolo/uwsgi-nginx-flask:python3.12-2026-06-24

# LightGBM must never start OpenMP threads in a process that forks (the mules load it after fork);
# one thread per process also avoids contention between the mules.
ENV OMP_NUM_THREADS=1
# The model registry: a fixed path, a volume so models survive the container and can be shared.
ENV FORECAST_REGISTRY_DIR=/var/lib/forecast/registry
# A fixed pool of web workers (the image's cheaper mode is off); prestart.sh keeps the image's
# UWSGI_PROCESSES in step with FORECAST_UWSGI_PROCESSES.
ENV UWSGI_CHEAPER=0

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

# The image's demo app is replaced by ours; its layout: /app/uwsgi.ini, /app/prestart.sh, /app/nginx.conf.
RUN rm -f /app/main.py
COPY uwsgi.ini nginx.conf prestart.sh /app/
COPY forecast /app/forecast
COPY app /app/app
COPY mules /app/mules
COPY serving /app/serving

# The default model, trained at build time so `docker run` serves at once (data is generated,
# used and deleted here; a mounted empty registry gets a model trained at start by prestart.sh).
RUN FORECAST_DATA_PATH=/tmp/forecast-data/train.csv python -m forecast train \
    && rm -rf /tmp/forecast-data
VOLUME ["/var/lib/forecast/registry"]

HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "curl -fsS http://127.0.0.1:${LISTEN_PORT:-80}/status > /dev/null || exit 1"]
EXPOSE 80
