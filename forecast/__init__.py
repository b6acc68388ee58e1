"""The sales forecast model: data, features, training, registry and loading.

This package is shared by the training CLI, the uWSGI mules and (for the parts
that do not touch LightGBM) the web workers.  It never imports Flask or
``uwsgi``; :mod:`forecast.model` is the only module that imports LightGBM, and
nothing imports it at package import time, so a web worker or the uWSGI master
can use :mod:`forecast.registry` metadata without loading OpenMP before fork.
"""
