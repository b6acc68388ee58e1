"""Every setting of the service, read once from ``FORECAST_*`` environment variables.

Build one :class:`Settings` in each entry point (the app factory, the mule,
the CLI) and pass it down; nothing reads the environment at import time.
Units are in the names (``_S``, ``_MS``, ``_BYTES``).  The README has the
table of every variable, its default and its meaning.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Typed settings; a bad value fails at start with the variable's name."""

    model_config = SettingsConfigDict(env_prefix="FORECAST_", extra="ignore", frozen=True)

    registry_dir: Path = Field(Path("registry"), description="Model registry directory (a volume in the image).")
    data_path: Path = Field(
        Path("data/train.csv"),
        description="Training CSV (date,store,item,sales); generated on first `make train` if missing.",
    )
    train_rounds: int = Field(300, ge=1, description="Boosting rounds for `make train`.")
