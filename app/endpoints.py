"""One declaration per endpoint: its route, its OpenAPI operation and its entry in ``GET /``'s index.

An :class:`Endpoint` names the view, its methods and rule once; everything else reads
the list of them (``views.ENDPOINTS``), the way Ray Serve carries one ``route`` in its
handler's metadata:

* the blueprint registers each rule (:func:`app.views.register`);
* the OpenAPI document takes each operation at its path (:func:`app.openapi.build`);
* ``GET /`` lists the ones marked ``in_index``;
* the trailing-slash redirects come from Flask's URL map, so from the same rules.

``tests/unit/test_contract.py`` compares the served routes with the document: an
endpoint added with no operation, or an operation with no route, fails it.  Adding an
endpoint is its view, one :class:`Endpoint` in the list, and its operation builder.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from flask.typing import ResponseReturnValue

from app.domain import Domain
from serving.settings import Settings


class Served(NamedTuple):
    """What an operation is documented against: the settings, the served versions' span, the models served."""

    settings: Settings
    domain: Domain | None
    models: tuple[str, ...]


Operation = Callable[[Served], dict[str, Any]]  # an OpenAPI operation object, JSON-ready


@dataclass(frozen=True)
class Endpoint:
    """One route of the service.

    ``operation`` is None only for routes that are not operations of the API (the document
    itself and the redirect to its UI): the contract test lists those by path.
    """

    rule: str  # Flask's rule: /models/<name>/predict
    methods: tuple[str, ...]  # as the index writes them: GET or POST
    view: Callable[..., ResponseReturnValue]
    operation: Operation | None
    in_index: bool = False  # listed in GET /'s "endpoints", under the view's name
    example: str = ""  # after the methods and path in that entry: a body to send

    @property
    def path(self) -> str:
        """The OpenAPI path of the rule (``/models/{name}/predict``)."""
        return re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", self.rule)

    def index_entry(self) -> str:
        """``GET /``'s line for it: ``GET or POST /reload``."""
        entry = f"{' or '.join(self.methods)} {self.rule}"
        return f"{entry} {self.example}" if self.example else entry
