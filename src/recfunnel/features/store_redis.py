"""The Redis feature store: the same contract as SQLite, shared by several API replicas.

`append` is one Lua script, so a batch is applied atomically (seed, dedupe, history,
log, counters) and no replica ever sees half of it. Keys, under `prefix`:

    meta                   hash: counters / blacklist versions
    h:{user}               list of "ts<TAB>item", oldest first, trimmed to history_cap
    ids                    set of client event ids (dedupe of retries)
    log                    stream of accepted events (JSON), trimmed to ~log_maxlen
    c:{window}             hash item -> "value<TAB>t_ref" (decayed counter)
    cv:{window}            sorted set item -> version of its last change
    s:{user}               list of served answers (JSON), newest first
    f:{kind}:{key}         hash name -> JSON value
    blacklist              set of raw item ids

Durability is the Redis server's: with `appendonly yes` and `appendfsync always` an
event is on disk before the reply. A standalone server is assumed (the script touches
keys it derives, which a cluster would refuse).
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal, Mapping, Sequence

import redis

from recfunnel.features.store import (
    HISTORY_CAP,
    Event,
    FeatureStore,
    Served,
    StoreError,
    Window,
    decay_to,
)

APPEND = """
local p = cjson.decode(ARGV[1])
local pre = p.prefix
local version = redis.call('HINCRBY', pre .. 'meta', 'counters', 1)
local touched = {}
for _, u in ipairs(p.seeds) do
  local key = pre .. 'h:' .. u.user
  if redis.call('EXISTS', key) == 0 then
    for i = 1, #u.entries, 500 do
      redis.call('RPUSH', key, unpack(u.entries, i, math.min(i + 499, #u.entries)))
    end
  end
end
local out = {}
for i, e in ipairs(p.events) do
  local new = 1
  if e.id ~= '' then new = redis.call('SADD', pre .. 'ids', e.id) end
  if new == 1 then
    local key = pre .. 'h:' .. e.user
    redis.call('RPUSH', key, e.entry)
    touched[key] = true
    redis.call('XADD', pre .. 'log', 'MAXLEN', '~', p.maxlen, '*', 'e', e.log)
    for _, w in ipairs(p.windows) do
      local ckey = pre .. 'c:' .. w.name
      local old = redis.call('HGET', ckey, e.item)
      local v, t = 1.0, e.ts
      if old then
        local tab = string.find(old, '\\t', 1, true)
        local ov, ot = tonumber(string.sub(old, 1, tab - 1)), tonumber(string.sub(old, tab + 1))
        if e.ts >= ot then
          v, t = ov * math.pow(2, -(e.ts - ot) / w.half_life) + 1.0, e.ts
        else
          v, t = ov + math.pow(2, -(ot - e.ts) / w.half_life), ot
        end
      end
      redis.call('HSET', ckey, e.item, string.format('%.17g\\t%.17g', v, t))
      redis.call('ZADD', pre .. 'cv:' .. w.name, version, e.item)
    end
  end
  out[i] = new
end
for key, _ in pairs(touched) do
  redis.call('LTRIM', key, -p.cap, -1)
end
return out
"""


class RedisStore(FeatureStore):
    backend = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = "recfunnel:",
        history_cap: int = HISTORY_CAP,
        served_cap: int = 100,
        log_maxlen: int = 10_000_000,
        timeout_s: float = 1.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.history_cap = history_cap
        self.served_cap = served_cap
        self.log_maxlen = log_maxlen
        self.r = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._append = self.r.register_script(APPEND)

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _call(self, fn, *args, **kwargs):  # noqa: ANN001, ANN202
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as e:
            raise StoreError(f"redis {self.url}: {e}") from e

    # ---- events and histories -------------------------------------------------------
    def append(
        self,
        events: Sequence[Event],
        seeds: Mapping[str, Sequence[tuple[str, int]]] | None = None,
        windows: Sequence[Window] = (),
    ) -> list[bool]:
        if not events:
            return []
        seeds = seeds or {}
        now = time.time()
        users = list(dict.fromkeys(e.user for e in events))
        payload = {
            "prefix": self.prefix,
            "cap": self.history_cap,
            "maxlen": self.log_maxlen,
            "windows": [{"name": w.name, "half_life": w.half_life_s} for w in windows],
            "seeds": [
                {"user": u, "entries": [f"{int(ts)}\t{item}" for item, ts in list(seeds[u])[-self.history_cap :]]}
                for u in users
                if seeds.get(u)
            ],
            "events": [
                {
                    "id": e.event_id,
                    "user": e.user,
                    "item": e.item,
                    "ts": int(e.ts),
                    "entry": f"{int(e.ts)}\t{e.item}",
                    "log": json.dumps(
                        {"id": e.event_id, "user": e.user, "item": e.item, "ts": int(e.ts),
                         "event": e.event, "value": e.value, "received": now}
                    ),
                }
                for e in events
            ],
        }
        out = self._call(self._append, keys=[], args=[json.dumps(payload)])
        return [bool(x) for x in out]

    def history(self, user: str, limit: int = HISTORY_CAP) -> list[tuple[str, int]] | None:
        rows = self._call(self.r.lrange, self._k("h", user), -int(limit), -1)
        if not rows:
            return None
        out = []
        for row in rows:
            ts, item = row.split("\t", 1)
            out.append((item, int(ts)))
        return out

    def read_user(self, user: str, limit: int = HISTORY_CAP) -> tuple[list[tuple[str, int]] | None, dict[str, int]]:
        pipe = self.r.pipeline(transaction=False)
        pipe.lrange(self._k("h", user), -int(limit), -1)
        pipe.hgetall(self._k("meta"))
        rows, meta = self._call(pipe.execute)
        hist = [(item, int(ts)) for ts, item in (r.split("\t", 1) for r in rows)] if rows else None
        return hist, {"counters": int(meta.get("counters", 0)), "blacklist": int(meta.get("blacklist", 0))}

    def has_events(self, event_ids: Sequence[str]) -> list[bool]:
        ids = list(event_ids)
        if not ids:
            return []
        return [bool(x) for x in self._call(self.r.smismember, self._k("ids"), ids)]

    def count_events(self) -> int:
        return int(self._call(self.r.xlen, self._k("log")))

    # ---- counters -------------------------------------------------------------------
    def counts(self, window: Window, now: float, since: int = 0) -> tuple[int, dict[str, float]]:
        pipe = self.r.pipeline(transaction=True)  # MULTI: the version matches the rows
        pipe.hget(self._k("meta"), "counters")
        pipe.zrangebyscore(self._k("cv", window.name), f"({int(since)}", "+inf")
        if since == 0:
            pipe.hgetall(self._k("c", window.name))
        res = self._call(pipe.execute)
        version, items = int(res[0] or 0), res[1]
        if since == 0:
            raw = res[2]
        else:
            vals = self._call(self.r.hmget, self._k("c", window.name), items) if items else []
            raw = {i: v for i, v in zip(items, vals) if v is not None}
        out = {}
        for item, s in raw.items():
            v, t = s.split("\t")
            out[item] = decay_to(float(v), float(t), now, window.half_life_s)
        return version, out

    def versions(self) -> dict[str, int]:
        raw = self._call(self.r.hgetall, self._k("meta"))
        return {"counters": int(raw.get("counters", 0)), "blacklist": int(raw.get("blacklist", 0))}

    # ---- served log -----------------------------------------------------------------
    def log_served(self, entries: Sequence[Served]) -> None:
        if not entries:
            return
        pipe = self.r.pipeline(transaction=False)
        for s in entries:
            key = self._k("s", s.user)
            pipe.lpush(key, json.dumps({"items": s.items, "ts": s.ts, "surface": s.surface,
                                        "version": s.version, "extra": s.extra}))
            pipe.ltrim(key, 0, self.served_cap - 1)
        self._call(pipe.execute)

    def served(self, user: str, limit: int = 20) -> list[Served]:
        rows = self._call(self.r.lrange, self._k("s", user), 0, int(limit) - 1)
        out = []
        for row in rows:
            d = json.loads(row)
            out.append(Served(user, d["items"], d["ts"], d["surface"], d["version"], d.get("extra", {})))
        return out

    # ---- features -------------------------------------------------------------------
    def put_features(self, kind: Literal["item", "user"], key: str, values: Mapping[str, Any]) -> None:
        if values:
            self._call(self.r.hset, self._k("f", kind, key), mapping={k: json.dumps(v) for k, v in values.items()})

    def get_features(self, kind: Literal["item", "user"], key: str) -> dict[str, Any]:
        raw = self._call(self.r.hgetall, self._k("f", kind, key))
        return {k: json.loads(v) for k, v in raw.items()}

    # ---- blacklist ------------------------------------------------------------------
    def update_blacklist(self, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        pipe = self.r.pipeline(transaction=True)
        if add:
            pipe.sadd(self._k("blacklist"), *add)
        if remove:
            pipe.srem(self._k("blacklist"), *remove)
        pipe.hincrby(self._k("meta"), "blacklist", 1)
        self._call(pipe.execute)
        return self.blacklist()

    def blacklist(self) -> list[str]:
        return sorted(self._call(self.r.smembers, self._k("blacklist")))

    # ---- life cycle -----------------------------------------------------------------
    def ping(self) -> None:
        self._call(self.r.ping)

    def clear(self) -> None:
        """Delete every key under the prefix (tests use a prefix of their own)."""
        keys = list(self._call(self.r.scan_iter, match=self.prefix + "*", count=1000))
        for start in range(0, len(keys), 500):
            self._call(self.r.delete, *keys[start : start + 500])

    def close(self) -> None:
        self.r.close()
