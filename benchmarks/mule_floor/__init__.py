"""The mule floor: the product's worker-to-mule hand-off answering a constant (``uwsgi.ini``, ``worker.py``,
``mule.py``); started by ``python -m benchmarks.floors mule-floor`` or the suite's ``mule-floor`` system."""

VERSION = "floor"  # the model version the floor's mules say they serve
CONSTANT = 31.7  # every row's "prediction"
BODY = b"31.7\n"  # every answer: the plain floor's constant (benchmarks/floor/constant.py)
