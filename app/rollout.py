"""The rolling reload: a model version goes through the mules one at a time, or not at all.

Policy only; the mechanics of asking one mule to load a version are
:meth:`app.mule_client.MuleClient.load`.  Runs in the web worker thread that
answers ``/reload``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from app.errors import ReloadRefused
from serving.messages import Result

logger = logging.getLogger(__name__)


class Loader(Protocol):
    """What a rollout needs of the mules: their ids, and a way to have one load a version."""

    mule_ids: list[int]

    def load(self, mule_id: int, version: str) -> Result: ...


def roll_out(mules: Loader, version: str, previous: dict[int, str | None]) -> None:
    """Have each mule in turn load ``version``; the others keep serving meanwhile.

    ``previous`` is the version each mule held before (None: none).  If a mule refuses,
    the mules already switched go back to their previous version, and
    :class:`ReloadRefused` names the mule and its reason; the refusing mule kept its own.
    """
    switched: list[int] = []
    for mule_id in mules.mule_ids:
        result = mules.load(mule_id, version)
        if not result.ok:
            _roll_back(mules, switched, previous)
            raise ReloadRefused(f"mule {mule_id} refused version {version}: {result.error}")
        switched.append(mule_id)


def _roll_back(mules: Loader, switched: list[int], previous: dict[int, str | None]) -> None:
    for mule_id in switched:
        version = previous.get(mule_id)
        if version is None:
            continue  # it held nothing before: the new version is better than none
        result = mules.load(mule_id, version)
        if not result.ok:
            logger.error("mule %d: rollback to %s refused: %s", mule_id, version, result.error)
