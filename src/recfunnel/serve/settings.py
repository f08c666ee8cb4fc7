"""Settings of the online service: one typed object, from CLI flags or the environment.

`recfunnel serve` hands the whole object to uvicorn's worker processes as JSON in
RECFUNNEL_SERVE_SETTINGS (they start from an import string); the API key may also come
from RECFUNNEL_API_KEY so it never has to appear on a command line.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ENV = "RECFUNNEL_SERVE_SETTINGS"  # JSON of the whole object (how `serve` hands it to workers)


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    artifacts: Path = Field(Path("artifacts"), description="artifact root (its `current` is served) or one version")
    store: Literal["sqlite", "redis"] = Field("sqlite", description="online feature store backend")
    state_dir: Path = Field(Path("state"), description="SQLite store directory")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis store URL")
    redis_prefix: str = Field("recfunnel:", description="key prefix in Redis (one per deployment)")
    api_key: str = Field("", description="key for write/admin endpoints (X-API-Key); empty: a random one")
    # request limits
    max_n: int = Field(100, ge=1, description="largest n a request may ask for")
    max_page: int = Field(20, ge=0, description="largest page number")
    # online behaviour
    history_limit: int = Field(200, ge=1, description="history events a request reads")
    recall_budget_ms: float = Field(30.0, gt=0, description="channels not started by then are skipped")
    rank_after_ms: float = Field(40.0, gt=0, description="ranking is skipped if recall ends later")
    workers: int = Field(
        0, ge=0, le=16, description="funnel worker processes behind the HTTP process (0: the funnel runs in it)"
    )
    watch_s: float = Field(5.0, ge=0, description="poll the artifact root for a new version (0 = off)")
    served_log: bool = Field(True, description="log what was served (batched, off the request path)")
    compile_ranker: bool = Field(True, description="score with the ranker compiled to native code (lleaves) once ready")
    web: bool = Field(True, description="serve the web page")
    web_events: bool = Field(True, description="let the web page record clicks as events")

    def resolved_key(self) -> str:
        return self.api_key or os.environ.get("RECFUNNEL_API_KEY", "")

    @classmethod
    def from_env(cls) -> "ServeSettings":
        raw = os.environ.get(ENV)
        s = cls.model_validate(json.loads(raw)) if raw else cls()
        return s

    def to_env(self) -> dict[str, str]:
        return {ENV: self.model_dump_json()}


def ensure_key(settings: ServeSettings) -> ServeSettings:
    """Write endpoints are never open: without a configured key, make a random one."""
    if settings.resolved_key():
        return settings.model_copy(update={"api_key": settings.resolved_key()})
    return settings.model_copy(update={"api_key": secrets.token_urlsafe(24)})
