"""uWSGI mule entry point: ``mule = mules/main.py`` in uwsgi.ini (run as ``__main__``).

The file form, not ``module:callable``, is what works across uWSGI modes
(unbit/uwsgi#1746).  Everything, LightGBM included, is imported here, after
the master forked this mule.
"""

import sys

# LightGBM imports pandas whenever it is installed, for DataFrame input a mule never passes: about
# 30 MB of each mule's memory (measured). A None entry makes that import raise ImportError, which
# LightGBM catches (pandas is optional to it). Here, not in mules.loop: only in the mule's own process.
sys.modules["pandas"] = None  # type: ignore[assignment]  # typeshed has no None; the import system reads it

from mules.loop import main  # noqa: E402  # after the entry above

main()
