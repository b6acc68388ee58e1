"""uWSGI mule entry point: ``mule = mules/main.py`` in uwsgi.ini (run as ``__main__``).

The file form, not ``module:callable``, is what works across uWSGI modes
(unbit/uwsgi#1746).  Everything, LightGBM included, is imported here, after
the master forked this mule.
"""

from mules.loop import main

main()
