"""The rolling reload: a model version goes through the mules one at a time, or not at all.

Policy only; the mechanics of asking one mule to load a version are
:meth:`app.mule_client.MuleClient.load`.  Runs in the web worker thread that
answers ``/reload``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from app.errors import ReloadRefused
from serving.messages import Heartbeat, Result

logger = logging.getLogger(__name__)


class Loader(Protocol):
    """What a rollout needs of the mules: their ids, and a way to have one load a version."""

    mule_ids: list[int]

    def load(self, mule_id: int, version: str, pid: int | None) -> Result: ...


def roll_out(mules: Loader, version: str, before: dict[int, Heartbeat | None]) -> None:
    """Have each mule in turn load ``version``; the others keep serving meanwhile.

    ``before`` is each mule's heartbeat before the rollout (its pid and version; None: it
    never reported).  If a mule refuses (or dies loading), the mules already switched go back
    to their previous version, and :class:`ReloadRefused` names the mule and its reason.
    """
    switched: list[int] = []
    for mule_id in mules.mule_ids:
        result = mules.load(mule_id, version, _pid(before, mule_id))
        if not result.ok:
            _roll_back(mules, switched, before)
            raise ReloadRefused(f"mule {mule_id} refused version {version}: {result.error}")
        switched.append(mule_id)


def _pid(before: dict[int, Heartbeat | None], mule_id: int) -> int | None:
    beat = before.get(mule_id)
    return beat.pid if beat is not None else None


def _roll_back(mules: Loader, switched: list[int], before: dict[int, Heartbeat | None]) -> None:
    for mule_id in switched:
        beat = before.get(mule_id)
        version = beat.model_version if beat is not None else None
        if version is None:
            continue  # it held nothing before: the new version is better than none
        result = mules.load(mule_id, version, beat.pid if beat is not None else None)
        if not result.ok:
            logger.error("mule %d: rollback to %s refused: %s", mule_id, version, result.error)
