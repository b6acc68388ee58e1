"""The sales forecast model: data, features, training, registry and loading.

This package is shared by the training CLI, the uWSGI mules and (for the parts
that do not touch LightGBM) the web workers.  It knows nothing of uWSGI, HTTP or
the serving kernel: it never imports Flask, ``uwsgi`` or :mod:`serving`.  Only
:mod:`forecast.model` and :mod:`forecast.train` import LightGBM, and nothing
imports them at package import time, so a web worker or the uWSGI master can use
:mod:`forecast.registry` metadata without loading OpenMP before fork.
"""
