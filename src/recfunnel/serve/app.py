"""The HTTP API (FastAPI): recommendations, similar items, events, admin, health, metrics.

`create_app(settings)` builds one app with its own store, engine, event intake and
metrics; `app_from_env()` is the factory uvicorn workers call. OpenAPI docs are at /docs.

Reads are open; writes (`POST /events`) and `/admin/*` need the API key in `X-API-Key`.
Every input is validated and a bad one is a 4xx whose detail names the field. A failing
channel, stage or store read is skipped and named in the answer (`skipped`), never a
5xx; the popular list is the floor.
"""


import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, HTTPException, Path, Query, Response
from fastapi.responses import JSONResponse
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.artifacts import ArtifactError, resolve
from recfunnel.features.store import StoreError, open_store
from recfunnel.serve.engine import Engine, ReloadError
from recfunnel.serve.events import ID_PATTERN, MAX_BATCH, MAX_ID_LEN, EventBatch, EventIn, EventIntake, EventsAccepted, RawId
from recfunnel.serve.metrics import Metrics
from recfunnel.serve.pool import FunnelPool, WorkerGone
from recfunnel.serve.settings import ServeSettings, ensure_key

log = logging.getLogger("recfunnel.serve")
MAX_BODY = 2 * 1024 * 1024
SURFACE = r"^[A-Za-z0-9_-]{1,32}$"
VERSION_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN, description="raw user id")]
ItemId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN, description="raw item id")]


# ---- response and request models (the OpenAPI docs) -----------------------------------
class ItemOut(BaseModel):
    id: str
    title: str
    categories: list[str]
    score: float


class RecItem(ItemOut):
    channels: list[str] = Field(description="recall channels that found the item")
    # with explain=true:
    channel_scores: dict[str, float] | None = None
    channel_ranks: dict[str, int] | None = None
    scores: dict[str, float] | None = Field(None, description="stage scores: merge (best relative channel rank, negated), rank")
    rank_before_rerank: int | None = Field(None, description="0-based position in the ranker's order")
    rules: list[str] | None = Field(None, description="re-rank rules that moved the item")
    propensity: float | None = Field(None, description="probability of this item in this slot")


class RecommendOut(BaseModel):
    user: str
    version: str
    cold_start: bool
    items: list[RecItem]
    fallback: str | None = None
    skipped: dict[str, str] | None = Field(None, description="stages/channels skipped and why")
    history_source: str | None = None
    trace: dict[str, Any] | None = Field(None, description="explain=true: ms, counts, rules, skipped per stage")


class SimilarOut(BaseModel):
    item: str
    version: str
    source: str = Field(description="itemcf, cooccur or category-popular")
    items: list[ItemOut]


class ItemDetail(BaseModel):
    id: str
    title: str
    categories: list[str]
    popularity: float
    live_hot: dict[str, float] = Field(description="live decayed counts from the store, per window")
    features: dict[str, Any] = Field(description="features stored online for this item")
    version: str


class HistoryEntry(BaseModel):
    item: str
    title: str
    ts: int


class HistoryOut(BaseModel):
    user: str
    known: bool = Field(description="the model was trained with this user")
    source: str = Field(description="store, artifact or none")
    history: list[HistoryEntry]
    served: list[dict[str, Any]] = Field(description="the user's last answers (newest first)")
    features: dict[str, Any] = Field({}, description="features stored online for this user")


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: str | None = Field(None, pattern=VERSION_NAME, description="a version directory under the root; default: current")


class ReloadOut(BaseModel):
    version: str
    previous: str | None
    changed: bool


class BlacklistIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: list[RawId] = Field([], max_length=MAX_BATCH)
    remove: list[RawId] = Field([], max_length=MAX_BATCH)


class BlacklistOut(BaseModel):
    blacklist: list[str]
    known: int = Field(description="how many listed ids are in the served catalog")


def _field_error(loc: list[Any], msg: str, status: int = 422) -> HTTPException:
    return HTTPException(status, detail=[{"loc": loc, "msg": msg, "type": "value_error"}])


class BodyLimit:
    """413 for bodies over MAX_BODY (checked on Content-Length and while reading)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
                    resp = JSONResponse({"detail": f"body larger than {MAX_BODY} bytes"}, status_code=413)
                    await resp(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class MetricsMiddleware:
    """Counts and times every request by route template (not raw path: bounded labels)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t = time.perf_counter()
        status = 500

        async def send_status(msg: dict) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, send_status)
        except Exception as e:
            self.metrics.errors.labels(_route(scope), type(e).__name__).inc()
            raise
        finally:
            route = _route(scope)
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t)
            if status >= 500:
                self.metrics.errors.labels(route, str(status)).inc()


def _route(scope: dict) -> str:
    """The route template ('/recommend/{user_id}'), else the endpoint's name: never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        return path
    return getattr(scope.get("endpoint"), "__name__", None) or "unmatched"


def create_app(settings: ServeSettings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = ensure_key(settings or ServeSettings())
    metrics = Metrics()
    pool = FunnelPool(settings, settings.workers) if settings.workers > 0 else None
    if engine is None:
        store = open_store(
            settings.store, state_dir=settings.state_dir, redis_url=settings.redis_url,
            **({"prefix": settings.redis_prefix} if settings.store == "redis" else {}),
        )
        engine = Engine(
            settings.artifacts, store, history_limit=settings.history_limit,
            recall_budget_ms=settings.recall_budget_ms, rank_after_ms=settings.rank_after_ms,
            # with a pool the workers answer; this engine serves the cheap endpoints and fallbacks
            served_log=settings.served_log, compile_ranker=settings.compile_ranker and pool is None,
        ).start(watch_s=settings.watch_s)
    intake = EventIntake(engine)
    metrics.set_version(engine.current().version)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        if pool is not None:
            await pool.start()
        yield
        if pool is not None:
            await pool.close()
        intake.close()
        engine.stop()

    async def answer(user: str, n: int, surface: str, page: int, explain: bool) -> tuple[bytes, dict[str, Any]]:
        """(JSON body, {version, ms, skipped}): from an idle worker process when there is a
        pool, else (and when a worker fails) from the engine in this process."""
        if pool is not None:
            try:
                head, body = await pool.recommend(user=user, n=n, surface=surface, page=page, explain=explain)
                if "error" not in head:
                    return body, head
                log.warning("funnel worker error, answering here: %s", head["error"])
            except WorkerGone as e:
                log.warning("%s; answering here", e)
        ans = engine.recommend(user, n=n, surface=surface, page=page, explain=explain)
        return json_bytes(ans.as_dict(explain)), {"version": ans.version, "ms": ans.trace.ms, "skipped": ans.trace.skipped}

    app = FastAPI(
        title="recfunnel",
        version="0.1.0",
        summary="A multi-stage recommender: recall, rank, re-rank, served with explanations.",
        lifespan=lifespan,
    )
    app.state.engine, app.state.intake, app.state.metrics, app.state.settings = engine, intake, metrics, settings
    app.state.pool, app.state.answer = pool, answer
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="key for write and admin endpoints")

    def require_key(key: Annotated[str | None, Depends(key_header)]) -> None:
        if not key or not hmac.compare_digest(key.encode(), settings.api_key.encode()):
            raise HTTPException(401, detail="missing or wrong X-API-Key")

    # ---- reads ----------------------------------------------------------------------
    @app.get("/recommend/{user_id}", response_model=RecommendOut, tags=["recommend"])
    async def recommend(
        user_id: UserId,
        n: Annotated[int, Query(ge=1, le=settings.max_n, description="items per page")] = 10,
        surface: Annotated[str, Query(pattern=SURFACE, description="where the list is shown")] = "home",
        page: Annotated[int, Query(ge=0, le=settings.max_page, description="0-based page of n items")] = 0,
        explain: Annotated[bool, Query(description="per item channels, scores, rules; per stage ms")] = False,
    ) -> Response:
        """The full funnel for one user; an unknown user gets the cold-start path."""
        body, head = await answer(user_id, n, surface, page, explain)
        metrics.observe_stages(head["ms"], head["skipped"])
        metrics.set_version(head["version"])
        return Response(body, media_type="application/json")

    @app.get("/similar/{item_id}", response_model=SimilarOut, tags=["recommend"])
    def similar(item_id: ItemId, n: Annotated[int, Query(ge=1, le=settings.max_n)] = 10) -> Response:
        """Item-to-item: the items most often consumed with this one."""
        try:
            snap, items, source = engine.similar(item_id, n)
        except KeyError:
            raise HTTPException(404, detail=f"unknown item '{item_id}'") from None
        return JSONResponse({"item": item_id, "version": snap.version, "source": source, "items": items})

    @app.get("/items/{item_id}", response_model=ItemDetail, tags=["catalog"])
    def item(item_id: ItemId) -> dict[str, Any]:
        snap = engine.current()
        i = snap.item_ids.get(item_id)
        if i < 0 or i >= snap.n_items:
            raise HTTPException(404, detail=f"unknown item '{item_id}'")
        try:
            snap.sync(engine.store, engine.store.versions())
        except StoreError:
            pass  # the counts as last read
        live = {}
        for w in snap.windows:
            arr = snap.live(w.half_life_s)
            live[w.name] = float(arr[i]) if arr is not None else 0.0
        try:
            feats = engine.store.get_features("item", item_id)
        except StoreError:
            feats = {}
        info = snap.item_info(i)
        return {**info, "popularity": float(snap.popularity[i]), "live_hot": live, "features": feats, "version": snap.version}

    @app.get("/users/{user_id}/history", response_model=HistoryOut, tags=["catalog"])
    def history(user_id: UserId, limit: Annotated[int, Query(ge=1, le=settings.history_limit)] = 50) -> dict[str, Any]:
        """The user's history as the funnel sees it (store first, else the artifact)."""
        snap = engine.current()
        u, items, ts, source = engine.user_history(snap, user_id)
        items, ts = items[-limit:], ts[-limit:]
        try:
            served = [s.__dict__ for s in engine.store.served(user_id, limit=5)]
            feats = engine.store.get_features("user", user_id)
        except StoreError:
            served, feats = [], {}
        return {
            "user": user_id,
            "known": u >= 0,
            "source": source,
            "history": [{"item": snap.item_ids.raw(int(i)), "title": snap.titles[int(i)], "ts": int(t)} for i, t in zip(items, ts)],
            "served": served,
            "features": feats,
        }

    # ---- writes ---------------------------------------------------------------------
    @app.post("/events", response_model=EventsAccepted, tags=["events"], dependencies=[Depends(require_key)])
    def post_events(body: Annotated[EventIn | EventBatch, Body(description="one event, or {'events': [...]}")]) -> dict[str, Any]:
        """Validate, make durable, apply: the very next recommendation sees them."""
        snap = engine.current()
        batch = body.events if isinstance(body, EventBatch) else [body]
        errors = []
        for k, e in enumerate(batch):
            if snap.item_ids.get(e.item) < 0:
                loc = ["body", "events", k, "item"] if isinstance(body, EventBatch) else ["body", "item"]
                errors.append({"loc": loc, "msg": f"unknown item '{e.item}' (not in catalog {snap.version})", "type": "value_error"})
        if errors:
            metrics.events.labels("rejected").inc(len(batch))
            raise HTTPException(422, detail=errors)
        now = int(time.time())
        try:
            flags = intake.submit([e.to_event(now) for e in batch])
        except (StoreError, TimeoutError) as e:
            metrics.events.labels("failed").inc(len(batch))
            raise HTTPException(503, detail=f"events not stored: {e}") from e
        accepted = sum(flags)
        metrics.events.labels("accepted").inc(accepted)
        metrics.events.labels("duplicate").inc(len(flags) - accepted)
        return {"accepted": accepted, "duplicates": len(flags) - accepted, "version": snap.version}

    # ---- admin ----------------------------------------------------------------------
    @app.post("/admin/reload", response_model=ReloadOut, tags=["admin"], dependencies=[Depends(require_key)])
    async def reload(body: Annotated[ReloadIn | None, Body()] = None) -> dict[str, Any]:
        """Load a version in the background of serving and swap it in; a broken one is refused (409)."""
        target = None
        if body is not None and body.version:
            target = engine.artifacts / body.version
            try:
                resolve(target)
            except ArtifactError:
                raise _field_error(["body", "version"], f"no published version '{body.version}'", 404) from None
        try:
            out = await run_in_threadpool(engine.reload, target)  # requests go on meanwhile
        except ReloadError as e:
            metrics.reloads.labels("refused").inc()
            raise HTTPException(409, detail=str(e)) from e
        if pool is not None:  # then each worker, one after the other
            for w in await pool.reload(str(target) if target is not None else None):
                if "error" in w:
                    metrics.reloads.labels("refused").inc()
                    raise HTTPException(409, detail=f"a funnel worker refused: {w['error']}")
        metrics.reloads.labels("ok").inc()
        metrics.set_version(out["version"])
        return out

    @app.post("/admin/blacklist", response_model=BlacklistOut, tags=["admin"], dependencies=[Depends(require_key)])
    def blacklist(body: BlacklistIn) -> dict[str, Any]:
        """Block (add) or unblock (remove) raw item ids, for every replica (kept in the store)."""
        try:
            items = engine.store.update_blacklist(body.add, body.remove)
            snap = engine.current()
            snap.sync(engine.store, engine.store.versions())
        except StoreError as e:
            raise HTTPException(503, detail=f"blacklist not stored: {e}") from e
        known = int((snap.item_ids.lookup(items) >= 0).sum()) if items else 0
        return {"blacklist": items, "known": known}

    # ---- operations -----------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        """A version is loaded and the store answers (and every funnel worker is up)."""
        snap = engine.snapshot
        problems = []
        ranker = snap.ranker_mode if snap else None
        workers = None
        if pool is not None:
            workers = await pool.status()
            if not all(w.get("version") for w in workers):
                problems.append("a funnel worker is (re)starting")
            modes = {str(w["ranker"]) for w in workers if w.get("ranker")}  # a restarting worker has none yet
            # the workers' common mode (e.g. "native", "mmoe"); "compiling" while any compiles
            ranker = "compiling" if "compiling" in modes else "/".join(sorted(modes))
        if snap is None:
            problems.append("no artifact version loaded")
        try:
            engine.store.ping()
        except StoreError as e:
            problems.append(f"store: {e}")
        body = {"ready": not problems, "version": snap.version if snap else None, "store": engine.store.backend,
                "ranker": ranker, "workers": workers, "problems": problems, "refused": engine.refused}
        return JSONResponse(body, status_code=200 if not problems else 503)

    @app.get("/metrics", tags=["ops"])
    def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.render(), media_type=metrics.content_type)

    if settings.web:
        from recfunnel.serve.web import mount_web

        mount_web(app, engine, intake, settings)
    app.add_middleware(BodyLimit)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def app_from_env() -> FastAPI:
    """The factory `uvicorn --factory` workers call (settings come as JSON in the environment)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(ServeSettings.from_env())
