"""The serving kernel: what the web workers and the mules share to work together.

Settings (``FORECAST_*``), the worker-mule contract (:mod:`serving.messages`: jobs,
results, notices, control messages, heartbeats, cache names), logging, the bulk
histogram update behind the metrics, process liveness, and the rendering of
``nginx.conf`` (which the Docker image's ``prestart.sh`` runs too).  It imports the
model package only for its settings, never LightGBM, Flask or ``uwsgi``:
:mod:`app` and :mod:`mules` build on it from either side of the process boundary.
"""
