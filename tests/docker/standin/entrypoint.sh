#!/usr/bin/env sh
# The base images' /entrypoint.sh (uwsgi-nginx's, then uwsgi-nginx-flask's): with /app/nginx.conf,
# copy it to /etc/nginx/nginx.conf and /etc/nginx/conf.d/nginx.conf; without it, generate both from
# the environment (workers, upload size, LISTEN_PORT, static files). Then exec the command.
set -e
USE_LISTEN_PORT=${LISTEN_PORT:-80}
if [ -f /app/nginx.conf ]; then
    cp /app/nginx.conf /etc/nginx/nginx.conf
    cp /app/nginx.conf /etc/nginx/conf.d/nginx.conf
else
    cat > /etc/nginx/nginx.conf <<NGINX
user nginx;
worker_processes ${NGINX_WORKER_PROCESSES:-1};
error_log /dev/stderr warn;
pid /var/run/nginx.pid;
events { worker_connections ${NGINX_WORKER_CONNECTIONS:-1024}; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    client_max_body_size ${NGINX_MAX_UPLOAD:-0};
    include /etc/nginx/conf.d/*.conf;
}
daemon off;
NGINX
    cat > /etc/nginx/conf.d/nginx.conf <<NGINX
server {
    listen ${USE_LISTEN_PORT};
    location / { try_files \$uri @app; }
    location @app { include uwsgi_params; uwsgi_pass unix:///tmp/uwsgi.sock; }
    location ${STATIC_URL:-/static} { alias ${STATIC_PATH:-/app/static}; }
}
NGINX
fi
exec "$@"
