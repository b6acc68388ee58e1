"""The planner page (``/ui``): its HTML, its script and style, and the chart library it draws with.

Everything the page shows comes from the public API (``/models``, ``/forecast``, ``/actuals``,
``/accuracy``), fetched by ``static/ui.js`` in the browser: the page is also a worked example of
using it.  The chart library (:mod:`app.ui.vendor`) is fetched at install time from its pinned
npm package into ``static/vendor/``, never from a CDN at run time.
"""

from __future__ import annotations

from pathlib import Path

PAGE = Path(__file__).resolve().parent / "page.html"
STATIC = Path(__file__).resolve().parent / "static"
