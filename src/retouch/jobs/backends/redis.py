"""The fleet backend: records, blobs, heartbeats and events on one Redis, nothing on a shared disk.

Keys (P is RETOUCH_REDIS_PREFIX):

- `P:job:{id}`, a hash per record; `P:blob:{id}:{name}`, a string per image;
- `P:queued:{slug}` and `P:processing:{slug}`, sorted sets of the unfinished jobs (scored by the
  time they were queued, and by the end of their lease), for counts and the sweep;
- `P:workers`, a hash of heartbeats; `P:events`, the pub/sub channel; `P:schema`, the layout's version.

Every conditional write is one Lua script, so a compare-and-set and everything it implies happen
at once: the write that ends a job also deletes its input blobs and sets the same expiry (the
retention) on its record and its output blobs. Times come from Redis's own clock (TIME), so hosts
whose clocks disagree still agree on leases. Each process has one connection pool with a timeout on
every call; a Redis that does not answer in time is a BackendUnavailable (503), never a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from huey.storage import RedisStorage
from redis.backoff import NoBackoff
from redis.retry import Retry

from retouch.errors import BackendUnavailable, Conflict, StorageFull, Unauthorized
from retouch.jobs.backends.base import NOTICES, not_enough_credits, queue_name
from retouch.jobs.backends.watchers import LocalWatchers
from retouch.jobs.records import (
    DURATION_WEIGHT,
    TRIED_TOO_OFTEN,
    Admitted,
    ApiKey,
    CancelOutcome,
    JobRecord,
    LeaseOutcome,
    OutputFile,
    Renewal,
    Status,
    WorkerInfo,
    key_from_fields,
    key_to_fields,
    record_from_fields,
    record_to_fields,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Seconds between two measures of the offset of this host's clock from Redis's.
CLOCK_CHECK = 30.0
WORKER_FORGOTTEN_AFTER = 86_400.0

_LIBRARY = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- The write that ends a job: its new fields, its inputs deleted, its record, outputs and Idempotency-Key
-- expiring together; `refund`: the job's charge goes back to its key, in the same write, so once.
local function end_job(job_key, prefix, retention_ms, fields, refund)
  local id = redis.call('HGET', job_key, 'id')
  local slug = redis.call('HGET', job_key, 'slug')
  redis.call('HSET', job_key, 'finished_at', tostring(now()), 'lease_until', '', unpack(fields))
  redis.call('ZREM', prefix .. ':queued:' .. slug, id)
  redis.call('ZREM', prefix .. ':processing:' .. slug, id)
  local blob_prefix = prefix .. ':blob:' .. id .. ':'
  for _, name in ipairs(cjson.decode(redis.call('HGET', job_key, 'inputs') or '[]')) do
    redis.call('DEL', blob_prefix .. name)
  end
  for _, output in ipairs(cjson.decode(redis.call('HGET', job_key, 'outputs') or '[]')) do
    redis.call('PEXPIRE', blob_prefix .. output['name'], retention_ms)
  end
  redis.call('PEXPIRE', job_key, retention_ms)
  local meta = redis.call('HMGET', job_key, 'owner_key', 'charge', 'idempotency_key')
  if refund and meta[1] and meta[1] ~= '' and tonumber(meta[2] or '0') > 0 then
    local key_key = prefix .. ':key:' .. meta[1]
    local credits = redis.call('HGET', key_key, 'credits')
    if credits and credits ~= '' then redis.call('HINCRBYFLOAT', key_key, 'credits', meta[2]) end
  end
  if meta[3] and meta[3] ~= '' then
    redis.call('PEXPIRE', prefix .. ':idem:' .. (meta[1] or '') .. ':' .. redis.sha1hex(meta[3]), retention_ms)
  end
end

local function owned_by(job_key, worker)
  local state = redis.call('HMGET', job_key, 'status', 'worker')
  return state[1] == 'PROCESSING' and state[2] == worker
end
"""

# KEYS: job; ARGV: prefix, then field, value, ... The input blobs named in `inputs` lose their expiry.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('job exists') end
local t = tostring(now())
redis.call('HSET', KEYS[1], 'created_at', t, 'enqueued_at', t, unpack(ARGV, 2))
local id = redis.call('HGET', KEYS[1], 'id')
local slug = redis.call('HGET', KEYS[1], 'slug')
for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'inputs'))) do
  redis.call('PERSIST', ARGV[1] .. ':blob:' .. id .. ':' .. name)
end
redis.call('ZADD', ARGV[1] .. ':queued:' .. slug, t, id)
return t
"""

# KEYS: job; ARGV: prefix, owner key id, Idempotency-Key, charge, then field, value, ... As _CREATE, after the
# Idempotency-Key (a live job that has it is answered instead) and the charge to the owner's key.
_ADMIT = """
local prefix, owner, idem, charge = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local idem_key = nil
if idem ~= '' then
  idem_key = prefix .. ':idem:' .. owner .. ':' .. redis.sha1hex(idem)
  local existing = redis.call('GET', idem_key)
  if existing and redis.call('EXISTS', prefix .. ':job:' .. existing) == 1 then return {'replay', existing} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('job exists') end
local remaining = ''
local paid = charge
if owner ~= '' then
  local key_key = prefix .. ':key:' .. owner
  if redis.call('EXISTS', key_key) == 0 then return {'revoked'} end
  local credits = redis.call('HGET', key_key, 'credits')
  if not credits or credits == '' then
    paid = 0
  else
    if tonumber(credits) + 1e-9 < charge then return {'poor', credits} end
    remaining = credits
    if charge > 0 then
      remaining = redis.call('HINCRBYFLOAT', key_key, 'credits', -charge)
      if tonumber(remaining) < 0 then
        redis.call('HSET', key_key, 'credits', '0')
        remaining = '0'
      end
    end
  end
end
local t = tostring(now())
redis.call('HSET', KEYS[1], 'created_at', t, 'enqueued_at', t, unpack(ARGV, 5))
redis.call('HSET', KEYS[1], 'charge', tostring(paid))
local id = redis.call('HGET', KEYS[1], 'id')
local slug = redis.call('HGET', KEYS[1], 'slug')
for _, name in ipairs(cjson.decode(redis.call('HGET', KEYS[1], 'inputs'))) do
  redis.call('PERSIST', prefix .. ':blob:' .. id .. ':' .. name)
end
redis.call('ZADD', prefix .. ':queued:' .. slug, t, id)
if idem_key then redis.call('SET', idem_key, id) end
return {'ok', t, remaining, tostring(paid)}
"""

# ARGV: prefix, id, name, secret hash, then field, value, ... 0 if the name is taken.
_CREATE_KEY = """
local prefix = ARGV[1]
if redis.call('SETNX', prefix .. ':keyname:' .. ARGV[3], ARGV[2]) == 0 then return 0 end
redis.call('SET', prefix .. ':keyhash:' .. ARGV[4], ARGV[2])
redis.call('HSET', prefix .. ':key:' .. ARGV[2], unpack(ARGV, 5))
redis.call('SADD', prefix .. ':keys', ARGV[2])
return 1
"""

# ARGV: prefix, 'hash' or 'name', value. The key's fields, or an empty list.
_KEY_BY = """
local id = redis.call('GET', ARGV[1] .. ':key' .. ARGV[2] .. ':' .. ARGV[3])
if not id then return {} end
return redis.call('HGETALL', ARGV[1] .. ':key:' .. id)
"""

# ARGV: prefix, name
_DELETE_KEY = """
local id = redis.call('GET', ARGV[1] .. ':keyname:' .. ARGV[2])
if not id then return 0 end
local key_key = ARGV[1] .. ':key:' .. id
redis.call('DEL', ARGV[1] .. ':keyhash:' .. (redis.call('HGET', key_key, 'secret_hash') or ''), key_key, ARGV[1] .. ':keyname:' .. ARGV[2])
redis.call('SREM', ARGV[1] .. ':keys', id)
return 1
"""

# ARGV: prefix, name, delta. Unlimited credits stay unlimited; a balance never goes below 0.
_ADD_CREDITS = """
local id = redis.call('GET', ARGV[1] .. ':keyname:' .. ARGV[2])
if not id then return 0 end
local key_key = ARGV[1] .. ':key:' .. id
local credits = redis.call('HGET', key_key, 'credits')
if credits and credits ~= '' then
  if tonumber(redis.call('HINCRBYFLOAT', key_key, 'credits', ARGV[3])) < 0 then redis.call('HSET', key_key, 'credits', '0') end
end
return 1
"""

# ARGV: prefix, id
_TOUCH_KEY = """
local key_key = ARGV[1] .. ':key:' .. ARGV[2]
if redis.call('EXISTS', key_key) == 1 then redis.call('HSET', key_key, 'last_used', tostring(now())) end
return 1
"""

# KEYS: job; ARGV: prefix, worker, lease
_TAKE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'QUEUED' then return false end
local t = now()
local expiry = t + tonumber(ARGV[3])
local id = redis.call('HGET', KEYS[1], 'id')
local slug = redis.call('HGET', KEYS[1], 'slug')
redis.call('HSET', KEYS[1], 'status', 'PROCESSING', 'worker', ARGV[2], 'started_at', tostring(t),
  'lease_until', tostring(expiry), 'progress', '')
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZREM', ARGV[1] .. ':queued:' .. slug, id)
redis.call('ZADD', ARGV[1] .. ':processing:' .. slug, expiry, id)
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: job; ARGV: prefix, worker, lease. Returns -1 (lost), 0 (owned) or 1 (owned, cancel requested).
_RENEW = """
if not owned_by(KEYS[1], ARGV[2]) then return -1 end
local expiry = now() + tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'id', 'slug', 'cancel_requested')
redis.call('HSET', KEYS[1], 'lease_until', tostring(expiry))
redis.call('ZADD', ARGV[1] .. ':processing:' .. state[2], expiry, state[1])
return tonumber(state[3] or '0')
"""

# KEYS: job; ARGV: worker, fraction
_PROGRESS = """
if not owned_by(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
"""

# KEYS: job; ARGV: prefix, retention_ms, guard ('owner' or 'queued'), worker, refund ('1' or '0'), then field, value, ...
_END = """
if ARGV[3] == 'owner' then
  if not owned_by(KEYS[1], ARGV[4]) then return 0 end
elseif redis.call('HGET', KEYS[1], 'status') ~= 'QUEUED' then
  return 0
end
end_job(KEYS[1], ARGV[1], tonumber(ARGV[2]), {unpack(ARGV, 6)}, ARGV[5] == '1')
return 1
"""

# KEYS: job; ARGV: prefix, retention_ms
_CANCEL = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'NOT_FOUND' end
if status == 'QUEUED' then
  end_job(KEYS[1], ARGV[1], tonumber(ARGV[2]), {'status', 'CANCELED', 'error', 'the request was cancelled'}, true)
  return 'CANCELED'
end
if status == 'PROCESSING' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'REQUESTED'
end
return 'ENDED'
"""

# KEYS: job; ARGV: prefix, retention_ms, max_attempts, error template
_EXPIRE_LEASE = """
local state = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'attempts', 'worker', 'id', 'slug')
if state[1] ~= 'PROCESSING' then return false end
local t = now()
if tonumber(state[2]) >= t then return false end
if tonumber(state[3]) >= tonumber(ARGV[3]) then
  local message = string.gsub(string.gsub(ARGV[4], '{attempts}', state[3]), '{worker}', state[4])
  end_job(KEYS[1], ARGV[1], tonumber(ARGV[2]), {'status', 'FAILED', 'error', message}, true)
  return 'FAILED'
end
redis.call('HSET', KEYS[1], 'status', 'QUEUED', 'worker', '', 'lease_until', '', 'started_at', '', 'progress', '',
  'enqueued_at', tostring(t))
redis.call('ZREM', ARGV[1] .. ':processing:' .. state[6], state[5])
redis.call('ZADD', ARGV[1] .. ':queued:' .. state[6], t, state[5])
return 'REQUEUED'
"""

# KEYS: job; ARGV: prefix
_MARK_ENQUEUED = """
if redis.call('HGET', KEYS[1], 'status') ~= 'QUEUED' then return 0 end
local t = now()
redis.call('HSET', KEYS[1], 'enqueued_at', tostring(t))
redis.call('ZADD', ARGV[1] .. ':queued:' .. redis.call('HGET', KEYS[1], 'slug'), t, redis.call('HGET', KEYS[1], 'id'))
return 1
"""

# KEYS: workers; ARGV: worker, threads, slugs (comma-separated)
_HEARTBEAT = """
redis.call('HSET', KEYS[1], ARGV[1], tostring(now()) .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return 1
"""

# KEYS: durations; ARGV: slug, seconds, weight of the newest
_DURATION = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
local new = tonumber(ARGV[2])
if old then new = tonumber(ARGV[3]) * new + (1 - tonumber(ARGV[3])) * tonumber(old) end
redis.call('HSET', KEYS[1], ARGV[1], tostring(new))
return 1
"""

_NOW = "return tostring(now())"


def connection_pool(url: str, timeout: float) -> redis.ConnectionPool:
    """One pool per process, with a timeout on every call and no silent retries (a retry would
    multiply the time a caller waits before its 503)."""
    return redis.ConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=max(1, int(timeout)),
        retry=Retry(NoBackoff(), 0),
    )


@contextlib.contextmanager
def redis_errors(what: str, pool: redis.ConnectionPool) -> Iterator[None]:
    try:
        yield
    except redis.exceptions.ResponseError as error:
        # Redis at its maxmemory (with no eviction, as it must be for a job store) refuses every write.
        if isinstance(error, redis.exceptions.OutOfMemoryError) or str(error).startswith("OOM"):
            logger.warning("the %s refused a write: %s", what, error)
            raise StorageFull("the server's storage is full; try again later") from None
        raise
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.BusyLoadingError,
    ) as error:
        where = pool.connection_kwargs.get("host", pool.connection_kwargs.get("path", "?"))
        port = pool.connection_kwargs.get("port")
        address = f"{where}:{port}" if port else str(where)
        raise BackendUnavailable(f"the {what} (Redis at {address}) did not answer ({type(error).__name__}); try again in a moment") from None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(reply: list[Any]) -> dict[str, str]:
    """A flat [field, value, ...] reply (HGETALL from a script) as a dict of text."""
    return {_text(reply[index]): _text(reply[index + 1]) for index in range(0, len(reply), 2)}


def _flat(values: dict[str, Any]) -> list[Any]:
    flat: list[Any] = []
    for name, value in values.items():
        flat.extend((name, "" if value is None else value))
    return flat


class RedisJobStore:
    def __init__(
        self,
        pool: redis.ConnectionPool,
        prefix: str,
        slugs: tuple[str, ...],
        retention: float,
    ) -> None:
        self.pool = pool
        self.prefix = prefix
        self.slugs = slugs
        self.retention_ms = max(1, int(retention * 1000))
        self.client = redis.Redis(connection_pool=pool)
        self._clock_offset: float | None = None
        self._clock_checked = 0.0
        scripts = {
            "create": _CREATE,
            "admit": _ADMIT,
            "create_key": _CREATE_KEY,
            "key_by": _KEY_BY,
            "delete_key": _DELETE_KEY,
            "add_credits": _ADD_CREDITS,
            "touch_key": _TOUCH_KEY,
            "take": _TAKE,
            "renew": _RENEW,
            "progress": _PROGRESS,
            "end": _END,
            "cancel": _CANCEL,
            "expire_lease": _EXPIRE_LEASE,
            "mark_enqueued": _MARK_ENQUEUED,
            "heartbeat": _HEARTBEAT,
            "duration": _DURATION,
            "now": _NOW,
        }
        self._scripts = {name: self.client.register_script(_LIBRARY + source) for name, source in scripts.items()}
        with self._errors():
            self._check_schema()

    def _errors(self) -> contextlib.AbstractContextManager[None]:
        return redis_errors("job store", self.pool)

    def _check_schema(self) -> None:
        key = f"{self.prefix}:schema"
        self.client.set(key, SCHEMA_VERSION, nx=True)
        found = int(self.client.get(key) or SCHEMA_VERSION)
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"the Redis keys under {self.prefix!r} were written by a newer retouch (layout {found}; this one knows "
                f"{SCHEMA_VERSION}); upgrade retouch, or set another RETOUCH_REDIS_PREFIX"
            )

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _call(self, script: str, job_id: str | None, *arguments: Any) -> Any:
        keys = [self._job_key(job_id)] if job_id is not None else []
        with self._errors():
            return self._scripts[script](keys=keys, args=list(arguments))

    def now(self) -> float:
        """Redis's clock, as this host's clock plus an offset measured against Redis's TIME every
        CLOCK_CHECK seconds: the one clock without a round trip on every read."""
        local = time.monotonic()
        if self._clock_offset is None or local - self._clock_checked > CLOCK_CHECK:
            before = time.time()
            remote = float(_text(self._call("now", None)))
            self._clock_offset = remote - (before + time.time()) / 2
            self._clock_checked = local
        return time.time() + self._clock_offset

    def ping(self) -> None:
        with self._errors():
            self.client.ping()

    def create(self, record: JobRecord) -> JobRecord:
        values = record_to_fields(record)
        values.pop("created_at")
        values.pop("enqueued_at")
        created = float(_text(self._call("create", record.id, self.prefix, *_flat(values))))
        record.created_at = record.enqueued_at = created
        return record

    def admit(self, record: JobRecord, retention: float) -> Admitted:
        values = record_to_fields(record)
        values.pop("created_at")
        values.pop("enqueued_at")
        reply = [
            _text(part)
            for part in self._call(
                "admit",
                record.id,
                self.prefix,
                record.owner_key or "",
                record.idempotency_key or "",
                repr(float(record.charge)),
                *_flat(values),
            )
        ]
        if reply[0] == "replay":
            return Admitted(record=None, replay_of=reply[1])
        if reply[0] == "revoked":
            raise Unauthorized("this API key has been revoked; ask the operator for another")
        if reply[0] == "poor":
            raise not_enough_credits(float(reply[1]), record.charge)
        record.created_at = record.enqueued_at = float(reply[1])
        record.charge = float(reply[3])
        return Admitted(record=record, remaining_credits=float(reply[2]) if reply[2] else None)

    def find_idempotent(self, owner_key: str | None, idempotency_key: str, retention: float) -> JobRecord | None:
        digest = hashlib.sha1(idempotency_key.encode()).hexdigest()
        with self._errors():
            job_id = self.client.get(f"{self.prefix}:idem:{owner_key or ''}:{digest}")
        return self.get(_text(job_id)) if job_id is not None else None

    # ---- API keys ----

    def create_key(self, key: ApiKey) -> None:
        values = key_to_fields(key)
        if not int(
            self._call(
                "create_key",
                None,
                self.prefix,
                key.id,
                key.name,
                key.secret_hash,
                *_flat(values),
            )
        ):
            raise Conflict(f"a key named {key.name!r} exists already; choose another name, or revoke it first")

    def _key_by(self, kind: str, value: str) -> ApiKey | None:
        reply = self._call("key_by", None, self.prefix, kind, value)
        return key_from_fields(_fields(reply)) if reply else None

    def key_by_hash(self, secret_hash: str) -> ApiKey | None:
        return self._key_by("hash", secret_hash)

    def key_by_id(self, key_id: str) -> ApiKey | None:
        with self._errors():
            values = self.client.hgetall(f"{self.prefix}:key:{key_id}")
        return key_from_fields({_text(name): _text(value) for name, value in values.items()}) if values else None

    def key_by_name(self, name: str) -> ApiKey | None:
        return self._key_by("name", name)

    def list_keys(self) -> list[ApiKey]:
        with self._errors():
            ids = self.client.smembers(f"{self.prefix}:keys")
        keys = [self.key_by_id(_text(key_id)) for key_id in ids]
        return sorted((key for key in keys if key is not None), key=lambda key: key.created_at)

    def delete_key(self, name: str) -> bool:
        return bool(self._call("delete_key", None, self.prefix, name))

    def add_credits(self, name: str, delta: float) -> ApiKey | None:
        self._call("add_credits", None, self.prefix, name, repr(float(delta)))
        return self.key_by_name(name)

    def touch_key(self, key_id: str) -> None:
        self._call("touch_key", None, self.prefix, key_id)

    def key_count(self) -> int:
        with self._errors():
            return int(self.client.scard(f"{self.prefix}:keys"))

    def get(self, job_id: str) -> JobRecord | None:
        with self._errors():
            values = self.client.hgetall(self._job_key(job_id))
        if not values:
            return None
        return record_from_fields({_text(name): _text(value) for name, value in values.items()})

    def take(self, job_id: str, worker: str, lease: float) -> JobRecord | None:
        reply = self._call("take", job_id, self.prefix, worker, lease)
        return record_from_fields(_fields(reply)) if reply else None

    def renew(self, job_id: str, worker: str, lease: float) -> Renewal:
        answer = int(self._call("renew", job_id, self.prefix, worker, lease))
        if answer < 0:
            return Renewal.LOST
        return Renewal.CANCEL_REQUESTED if answer else Renewal.OWNED

    def set_progress(self, job_id: str, worker: str, fraction: float) -> bool:
        return bool(self._call("progress", job_id, worker, repr(float(fraction))))

    def _end(
        self,
        job_id: str,
        guard: str,
        worker: str,
        fields: dict[str, Any],
        refund: bool = False,
    ) -> bool:
        return bool(
            self._call(
                "end",
                job_id,
                self.prefix,
                self.retention_ms,
                guard,
                worker,
                "1" if refund else "0",
                *_flat(fields),
            )
        )

    def finish(
        self,
        job_id: str,
        worker: str,
        outputs: list[OutputFile],
        engine: str,
        metrics: dict[str, Any],
    ) -> bool:
        fields = {
            "status": Status.COMPLETED.value,
            "outputs": json.dumps([output.__dict__ for output in outputs]),
            "engine": engine,
            "metrics": json.dumps(metrics),
            "progress": "1.0",
        }
        return self._end(job_id, "owner", worker, fields)

    def fail(
        self,
        job_id: str,
        worker: str,
        error: str,
        metrics: dict[str, Any] | None = None,
        refund: bool = True,
    ) -> bool:
        fields: dict[str, Any] = {"status": Status.FAILED.value, "error": error}
        if metrics is not None:
            fields["metrics"] = json.dumps(metrics)
        return self._end(job_id, "owner", worker, fields, refund=refund)

    def fail_queued(self, job_id: str, error: str) -> bool:
        return self._end(
            job_id,
            "queued",
            "",
            {"status": Status.FAILED.value, "error": error},
            refund=True,
        )

    def cancel(self, job_id: str) -> CancelOutcome:
        return CancelOutcome(_text(self._call("cancel", job_id, self.prefix, self.retention_ms)))

    def cancel_at_step(self, job_id: str, worker: str) -> bool:
        return self._end(
            job_id,
            "owner",
            worker,
            {
                "status": Status.CANCELED.value,
                "error": "the request was cancelled while it ran",
            },
        )

    def expired_leases(self, slug: str) -> list[str]:
        now = self.now()
        with self._errors():
            ids = self.client.zrangebyscore(f"{self.prefix}:processing:{slug}", "-inf", f"({now}")
        return [_text(job_id) for job_id in ids]

    def expire_lease(self, job_id: str, max_attempts: int) -> LeaseOutcome | None:
        answer = self._call(
            "expire_lease",
            job_id,
            self.prefix,
            self.retention_ms,
            max_attempts,
            TRIED_TOO_OFTEN,
        )
        return LeaseOutcome(_text(answer)) if answer else None

    def stale_queued(self, slug: str, older_than: float) -> list[str]:
        now = self.now()
        with self._errors():
            ids = self.client.zrangebyscore(f"{self.prefix}:queued:{slug}", "-inf", f"({now - older_than}")
        return [_text(job_id) for job_id in ids]

    def mark_enqueued(self, job_id: str) -> bool:
        return bool(self._call("mark_enqueued", job_id, self.prefix))

    def count(self, status: Status, slug: str | None = None) -> int:
        if status not in (Status.QUEUED, Status.PROCESSING):
            raise ValueError(f"only unfinished jobs are counted, not {status.value}")
        kind = "queued" if status is Status.QUEUED else "processing"
        slugs = self.slugs if slug is None else (slug,)
        with self._errors():
            pipeline = self.client.pipeline(transaction=False)
            for each in slugs:
                pipeline.zcard(f"{self.prefix}:{kind}:{each}")
            return sum(pipeline.execute())

    def heartbeat(self, worker: str, slugs: tuple[str, ...], threads: int) -> None:
        with self._errors():
            self._scripts["heartbeat"](keys=[f"{self.prefix}:workers"], args=[worker, threads, ",".join(slugs)])

    def live_workers(self, within: float) -> dict[str, WorkerInfo]:
        now = self.now()
        with self._errors():
            entries = self.client.hgetall(f"{self.prefix}:workers")
        live = {}
        for worker, value in entries.items():
            seen, threads, slugs = _text(value).split(" ", 2)
            if float(seen) >= now - within:
                live[_text(worker)] = WorkerInfo(
                    slugs=tuple(slug for slug in slugs.split(",") if slug),
                    threads=int(threads),
                )
        return live

    def record_duration(self, slug: str, seconds: float) -> None:
        with self._errors():
            self._scripts["duration"](
                keys=[f"{self.prefix}:durations"],
                args=[slug, repr(float(seconds)), DURATION_WEIGHT],
            )

    def typical_durations(self) -> dict[str, float]:
        with self._errors():
            entries = self.client.hgetall(f"{self.prefix}:durations")
        return {_text(slug): float(_text(value)) for slug, value in entries.items()}

    def forget_worker(self, worker: str) -> None:
        with self._errors():
            self.client.hdel(f"{self.prefix}:workers", worker)

    def storage_problem(self, min_free_bytes: int) -> str | None:
        with self._errors():
            memory = self.client.info("memory")
        limit, used = int(memory.get("maxmemory", 0)), int(memory.get("used_memory", 0))
        if limit and limit - used < min_free_bytes:
            return (
                f"Redis uses {used / 1e6:.1f} MB of its maxmemory of {limit / 1e6:.1f} MB, leaving less than the "
                f"{min_free_bytes / 1e6:.0f} MB it keeps (RETOUCH_MIN_FREE_BYTES)"
            )
        return None

    def purge_expired(self, retention: float) -> int:
        """Records and blobs expire by themselves (Redis TTL); only long-gone workers' heartbeats are pruned."""
        now = self.now()
        with self._errors():
            entries = self.client.hgetall(f"{self.prefix}:workers")
            gone = [worker for worker, value in entries.items() if float(_text(value).partition(" ")[0]) < now - WORKER_FORGOTTEN_AFTER]
            if gone:
                self.client.hdel(f"{self.prefix}:workers", *gone)
        return 0

    def close(self) -> None:
        self.client.close()


class RedisBlobStore:
    def __init__(self, pool: redis.ConnectionPool, prefix: str) -> None:
        self.pool = pool
        self.prefix = prefix
        self.client = redis.Redis(connection_pool=pool)

    def _key(self, job_id: str, name: str) -> str:
        return f"{self.prefix}:blob:{job_id}:{name}"

    def put(self, job_id: str, name: str, data: bytes, ttl: float | None = None) -> None:
        with redis_errors("blob store", self.pool):
            self.client.set(
                self._key(job_id, name),
                data,
                px=max(1, int(ttl * 1000)) if ttl is not None else None,
            )

    def get(self, job_id: str, name: str) -> bytes | None:
        with redis_errors("blob store", self.pool):
            return self.client.get(self._key(job_id, name))

    def delete_job(self, job_id: str) -> None:
        with redis_errors("blob store", self.pool):
            keys = list(self.client.scan_iter(match=self._key(job_id, "*"), count=100))
            if keys:
                self.client.delete(*keys)

    def close(self) -> None:
        self.client.close()


class RedisJobQueue:
    """Lists of Huey's RedisStorage; a worker blocks on all its slugs' lists at once (BRPOP): no polling."""

    def __init__(
        self,
        pool: redis.ConnectionPool,
        prefix: str,
        slugs: tuple[str, ...],
        timeout: float,
    ) -> None:
        self.pool = pool
        self.timeout = timeout
        self._storages = {
            slug: RedisStorage(
                name=queue_name(prefix, slug),
                connection_pool=pool,
                blocking=True,
                read_timeout=1,
            )
            for slug in slugs
        }
        self._client = redis.Redis(connection_pool=pool)
        self._turn = itertools.count()

    def enqueue(self, slug: str, job_id: str) -> None:
        with redis_errors("queue", self.pool):
            self._storages[slug].enqueue(job_id.encode())

    def dequeue(self, slugs: tuple[str, ...], timeout: float) -> str | None:
        # BRPOP on every slug's list at once; its block must end before the socket's own timeout.
        start = next(self._turn) % len(slugs)
        keys = [self._storages[slug].queue_key for slug in slugs[start:] + slugs[:start]]
        block = max(0.01, min(timeout, 1.0, self.timeout / 2))
        with redis_errors("queue", self.pool):
            popped = self._client.brpop(keys, timeout=block)
        if popped is None:
            return None
        return popped[1].decode()

    def pending(self, slug: str) -> int:
        with redis_errors("queue", self.pool):
            return self._storages[slug].queue_size()

    def interrupt(self) -> None:
        """Nothing to do: a blocked BRPOP returns within a second."""

    def close(self) -> None:
        self._client.close()


class RedisEvents:
    """Notices on one pub/sub channel, heard by a listener thread per process. Workers need no wake-up:
    their dequeue blocks on the queue itself."""

    def __init__(self, pool: redis.ConnectionPool, prefix: str) -> None:
        self.pool = pool
        self.channel = f"{prefix}:events"
        self.client = redis.Redis(connection_pool=pool)
        self.watchers = LocalWatchers()
        self._closed = threading.Event()
        self._subscribed = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="retouch-events", daemon=True)
        self._thread.start()

    def publish_wake(self, slug: str) -> None:
        return None

    def wake_event_set(self) -> bool:
        return False

    def wait_for_wake(self, timeout: float) -> bool:
        return self._closed.wait(timeout)

    def publish_changed(self, job_id: str, kind: str) -> None:
        self.watchers.notify(job_id, kind)
        try:
            with redis_errors("event channel", self.pool):
                self.client.publish(self.channel, f"{kind} {job_id}")
        except BackendUnavailable as error:
            # Waiters re-check the record on their own; a lost notice costs them only latency.
            logger.warning("notice for request %s not sent: %s", job_id, error.message)

    def watch(self, job_id: str, callback: Callable[[str], None]) -> Callable[[], None]:
        return self.watchers.watch(job_id, callback)

    async def wait_changed(self, job_id: str, timeout: float, is_done: Callable[[], bool], recheck: float) -> bool:
        return await self.watchers.wait_changed(job_id, timeout, is_done, recheck)

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def _listen(self) -> None:
        backoff = 0.1
        while not self._closed.is_set():
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                self._subscribed.set()
                backoff = 0.1
                while not self._closed.is_set():
                    # Short waits, so that closing takes a moment, not seconds.
                    message = pubsub.get_message(timeout=0.25)
                    if message is not None and message.get("type") == "message":
                        kind, _, job_id = _text(message["data"]).partition(" ")
                        if kind in NOTICES and job_id:
                            self.watchers.notify(job_id, kind)
            except (
                redis.exceptions.ConnectionError,
                redis.exceptions.TimeoutError,
                OSError,
                ValueError,
            ) as error:
                self._subscribed.clear()
                if not self._closed.is_set():
                    logger.debug(
                        "event channel lost (%s); listening again in %.1f s",
                        error,
                        backoff,
                    )
                    self._closed.wait(backoff)
                    backoff = min(5.0, backoff * 2)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=3)
        self.client.close()


def wait_until_answering(pool: redis.ConnectionPool, timeout: float) -> None:
    """At start: wait up to `timeout` for Redis to answer, then give up with a message."""
    client = redis.Redis(connection_pool=pool)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.BusyLoadingError,
        ):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
