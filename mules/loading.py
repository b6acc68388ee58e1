"""What a mule remembers across its own death: the version it was loading, and the last one it loaded.

A model that crashes LightGBM while it loads (an abort, not an exception) takes the mule
with it, and uWSGI respawns the mule, which loads ``production`` again: a crash loop (seen:
34 respawns in a minute).  So before loading, a mule writes the version into uWSGI's state
cache, which outlives it, and clears it after.  A respawned mule that finds the mark of its
predecessor poisons that version for every mule (:func:`serving.messages.poisoned_key`) and
falls back to the last version that slot loaded.  Verification in a child process
(``Registry.check``, run on promote, import and ``/reload``) keeps most such models away
from mules; this catches the rest (an alias changed behind the server's back).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from forecast.registry import DEFAULT_MODEL
from serving.messages import STATE_CACHE, loaded_key, loading_key, poisoned_key

logger = logging.getLogger(__name__)


class LoadGuard:
    """One mule's load marks in the state cache (``uwsgi`` is the module, or a test's fake)."""

    def __init__(self, uwsgi: Any, mule_id: int) -> None:
        self.uwsgi = uwsgi
        self.mule_id = mule_id

    def died_loading(self) -> str | None:
        """The ``model/version`` this mule's predecessor died loading, now poisoned for every mule; None if none."""
        data = self.uwsgi.cache_get(loading_key(self.mule_id), STATE_CACHE)
        if not data:
            return None
        model, _, version = bytes(data).decode().partition("/")
        self.uwsgi.cache_update(poisoned_key(model, version), b"1", 0, STATE_CACHE)
        self.uwsgi.cache_del(loading_key(self.mule_id), STATE_CACHE)
        logger.error("mule %d: the previous mule died while loading %s %s; no mule loads it again", self.mule_id,
                     model, version)  # fmt: skip
        return version

    def poisoned(self, model: str, version: str) -> bool:
        return bool(self.uwsgi.cache_exists(poisoned_key(model, version), STATE_CACHE))

    def last_loaded(self) -> str | None:
        data = self.uwsgi.cache_get(loaded_key(self.mule_id), STATE_CACHE)
        return bytes(data).decode() if data else None

    @contextlib.contextmanager
    def loading(self, model: str, version: str) -> Iterator[None]:
        """Mark ``model/version`` as being loaded for the block; remember a default-model version that loaded."""
        self.uwsgi.cache_update(loading_key(self.mule_id), f"{model}/{version}".encode(), 0, STATE_CACHE)
        try:
            yield
        finally:  # an exception is a refusal, not a crash: only a dead mule leaves the mark
            self.uwsgi.cache_del(loading_key(self.mule_id), STATE_CACHE)
        if model == DEFAULT_MODEL:
            self.uwsgi.cache_update(loaded_key(self.mule_id), version.encode(), 0, STATE_CACHE)
