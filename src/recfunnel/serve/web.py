"""The web page: server-rendered (Jinja2) views of the same engine the API serves.

- `/`                 rows per category, and a "for you" row for a chosen user
- `/ui/items/{id}`    an item and its similar items
- `/ui/users/{id}`    history, recommendations and the explanation panel (channels,
                      scores, rules, stage timings); clicking an item records an event
                      and refreshes the recommendations (a few lines of JS)

Clicks go to `/ui/click` with a per-user token (an HMAC under the API key) rendered into
the page, so the page never carries the API key itself.
"""


import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.features.store import StoreError
from recfunnel.serve.events import EventIn, RawId

if TYPE_CHECKING:
    from recfunnel.serve.engine import Engine, Snapshot
    from recfunnel.serve.events import EventIntake
    from recfunnel.serve.settings import ServeSettings

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
ROWS, PER_ROW = 6, 8


class Click(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: RawId
    item: RawId
    token: str = Field(min_length=16, max_length=128)


def click_token(key: str, user: str) -> str:
    return hmac.new(key.encode(), f"click:{user}".encode(), hashlib.sha256).hexdigest()[:32]


def category_rows(snap: "Snapshot") -> list[tuple[str, list[dict[str, Any]]]]:
    """The most popular categories (not ones nearly every item has), their top items."""
    cached = getattr(snap, "_web_rows", None)
    if cached is not None:
        return cached
    members: dict[str, list[int]] = {}
    for i, cats in enumerate(snap.categories):
        for c in cats:
            members.setdefault(c, []).append(i)
    n = max(snap.n_items, 1)
    weight = {c: float(snap.popularity[m].sum()) for c, m in members.items() if len(m) < 0.5 * n and len(m) >= 3}
    rows = []
    for c in sorted(weight, key=lambda c: (-weight[c], c))[:ROWS]:
        top = sorted(members[c], key=lambda i: (-snap.popularity[i], i))[:PER_ROW]
        rows.append((c, [snap.item_info(i) for i in top]))
    snap._web_rows = rows  # type: ignore[attr-defined]
    return rows


def mount_web(app: FastAPI, engine: "Engine", intake: "EventIntake", settings: "ServeSettings") -> None:
    async def recs_context(user: str) -> dict[str, Any]:
        body, _ = await app.state.answer(user, 10, "web", 0, True)  # the pool's answer when there is one
        d = json.loads(body)
        trace = d["trace"]
        total = sum(trace["ms"].values()) or 1.0
        stages = [(k, v, 100.0 * v / total) for k, v in trace["ms"].items()]
        return {"user": user, "answer": d, "stages": stages, "token": click_token(settings.api_key, user)}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def home(request: Request, user: str | None = None) -> HTMLResponse:
        snap = engine.current()
        if user is not None and not _ok_id(user):
            raise HTTPException(422, detail=[{"loc": ["query", "user"], "msg": "not a valid user id", "type": "value_error"}])
        user = user or (snap.user_ids.raw_ids[0] if len(snap.user_ids) else "guest")
        for_you = json.loads((await app.state.answer(user, PER_ROW, "web-home", 0, False))[0])["items"]
        return TEMPLATES.TemplateResponse(
            request, "home.html", {"rows": category_rows(snap), "user": user, "for_you": for_you, "version": snap.version,
                                   "users": snap.user_ids.raw_ids[:8]},
        )

    @app.get("/ui/items/{item_id}", response_class=HTMLResponse, include_in_schema=False)
    def item_page(request: Request, item_id: str) -> HTMLResponse:
        if not _ok_id(item_id):
            raise HTTPException(422, detail="not a valid item id")
        try:
            snap, items, source = engine.similar(item_id, 12)
        except KeyError:
            raise HTTPException(404, detail=f"unknown item '{item_id}'") from None
        i = snap.item_ids.get(item_id)
        return TEMPLATES.TemplateResponse(
            request, "item.html", {"item": snap.item_info(i), "similar": items, "source": source, "version": snap.version,
                                   "popularity": float(snap.popularity[i])},
        )

    @app.get("/ui/users/{user_id}", response_class=HTMLResponse, include_in_schema=False)
    async def user_page(request: Request, user_id: str) -> HTMLResponse:
        if not _ok_id(user_id):
            raise HTTPException(422, detail="not a valid user id")
        snap = engine.current()
        _, items, ts, source = engine.user_history(snap, user_id)
        hist = [{**snap.item_info(int(i)), "ts": int(t)} for i, t in zip(items[::-1][:20], ts[::-1][:20])]
        ctx = await recs_context(user_id)
        return TEMPLATES.TemplateResponse(
            request, "user.html", {**ctx, "history": hist, "source": source, "version": snap.version,
                                   "n_history": len(items)},
        )

    @app.get("/ui/users/{user_id}/recs", response_class=HTMLResponse, include_in_schema=False)
    async def user_recs(request: Request, user_id: str) -> HTMLResponse:
        if not _ok_id(user_id):
            raise HTTPException(422, detail="not a valid user id")
        return TEMPLATES.TemplateResponse(request, "_recs.html", await recs_context(user_id))

    @app.post("/ui/click", include_in_schema=False)
    def click(body: Click) -> dict[str, Any]:
        if not settings.web_events:
            raise HTTPException(403, detail="the web page may not record events here")
        if not hmac.compare_digest(body.token, click_token(settings.api_key, body.user)):
            raise HTTPException(403, detail="bad click token")
        snap = engine.current()
        if snap.item_ids.get(body.item) < 0:
            raise HTTPException(422, detail=[{"loc": ["body", "item"], "msg": f"unknown item '{body.item}'", "type": "value_error"}])
        ev = EventIn(user=body.user, item=body.item, event="click").to_event(int(time.time()))
        try:
            intake.submit([ev])
        except (StoreError, TimeoutError) as e:
            raise HTTPException(503, detail=f"event not stored: {e}") from e
        app.state.metrics.events.labels("accepted").inc()
        return {"ok": True}


def _ok_id(raw: str) -> bool:
    return 0 < len(raw) <= 128 and raw == raw.strip() and not any(ord(c) < 32 or ord(c) == 127 for c in raw)

