# The forecast service on tiangolo/uwsgi-nginx-flask: nginx + uWSGI (supervisord) with our app and mules.
# The base image is deprecated upstream and uWSGI is in maintenance mode: the tag is pinned to a
# dated build so a rebuild gets the same base. Python 3.11: the version every test runs on, the
# image's included (docs/docker.md: why 3.11).
FROM tiangolo/uwsgi-nginx-flask:python3.11-2026-06-24

# LightGBM must never start OpenMP threads in a process that forks (the mules load it after fork);
# one thread per process also avoids contention between the mules.
ENV OMP_NUM_THREADS=1
# The model registry: a fixed path, a volume so models survive the container and can be shared.
ENV FORECAST_REGISTRY_DIR=/var/lib/forecast/registry
# A fixed pool of web workers (the image's cheaper mode is off); prestart.sh keeps the image's
# UWSGI_PROCESSES in step with FORECAST_UWSGI_PROCESSES.
ENV UWSGI_CHEAPER=0
# uWSGI's log (its own lines, and the app's and the mules' stderr) on the container's stdout, beside
# nginx's access lines: one stream, read by log collectors as the service's output (several treat
# stderr as errors).
ENV UWSGI_LOGTO=/dev/stdout

# Dependencies first, so code changes do not reinstall them. uv (the version the Makefile pins)
# installs the same pinned requirements into the image's Python, downloading in parallel, and is
# removed after. --system-certs: it trusts the image's CA store, as the image's pip does (uv's own
# default is a bundled list).
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir uv==0.13.9 \
    && uv pip install --system --system-certs --no-cache --python "$(command -v python)" -r /tmp/requirements.txt \
    && pip uninstall --yes uv && rm /tmp/requirements.txt

# On `docker stop`, nginx stops before uWSGI: it closes its port at once and finishes the requests it
# accepted while uWSGI still serves them (supervisord stops the highest priority first; the base gives
# both programs 999, and stopped uWSGI first: requests in flight were reset). The grep fails the build
# if the base's supervisord.conf no longer has the section.
RUN sed -i 's/^\[program:nginx\]$/[program:nginx]\npriority=1000/' /etc/supervisor/conf.d/supervisord.conf \
    && grep -qPz '\[program:nginx\]\npriority=1000\n' /etc/supervisor/conf.d/supervisord.conf

# The image's demo app is replaced by ours; its layout: /app/uwsgi.ini, /app/prestart.sh, /app/nginx.conf.
RUN rm -f /app/main.py
COPY uwsgi.ini nginx.conf prestart.sh /app/
COPY forecast /app/forecast
COPY app /app/app
COPY mules /app/mules
COPY serving /app/serving
# The planner page's chart library from its pinned npm package (a no-op when the build context has it).
RUN python /app/app/ui/vendor.py

# The default model, trained at build time so `docker run` serves at once (data is generated,
# used and deleted here; a mounted empty registry gets a model trained at start by prestart.sh).
RUN FORECAST_DATA_PATH=/tmp/forecast-data/train.csv python -m forecast train \
    && rm -rf /tmp/forecast-data
VOLUME ["/var/lib/forecast/registry"]

# LISTEN_PORT may carry an address (127.0.0.1:8080): the check takes the port after the last colon.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["sh", "-c", "curl -fsS \"http://127.0.0.1:${LISTEN_PORT##*:}/status\" > /dev/null || exit 1"]
EXPOSE 80
