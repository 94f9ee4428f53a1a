"""Who may spend what: API keys, the models each may use, its credits and its rate.

A key's secret is shown once, when it is made, and stored only as its SHA-256: a stolen job store
gives no usable key. Keys live in the job store (SQLite embedded, Redis in a fleet), read on every
request and never cached, so a revocation holds at once on every replica. Credits are charged by
the store's one write that admits a job (jobs/backends), so that concurrent requests cannot spend
the same credit twice; rates are a moving window of the `limits` library, in memory embedded and on
the fleet's Redis, so that replicas share one limit.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from functools import lru_cache

import limits
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from retouch.config import Settings
from retouch.errors import (
    BackendUnavailable,
    Forbidden,
    InvalidInput,
    RateLimited,
    Unauthorized,
)
from retouch.jobs.backends.base import JobStore, not_enough_credits
from retouch.jobs.records import ApiKey

# Recognisable in a config file or a leaked log, and by secret scanners.
SECRET_PREFIX = "rt_"
# Seconds between two writes of a key's "last used" time: a write per request would cost every request.
TOUCH_EVERY = 60.0
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ADMIN_KEY_NAME = "admin"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@lru_cache(maxsize=256)
def parse_rate(rate: str) -> limits.RateLimitItem:
    """ "60/minute", "10/second", "1000 per day": InvalidInput naming the value otherwise."""
    try:
        return limits.parse(rate)
    except ValueError:
        raise InvalidInput(f"the rate {rate!r} is not a rate; write it as a count per unit, e.g. 60/minute, 10/second or 1000/day") from None


def new_key(
    name: str,
    models: tuple[str, ...] | None,
    credits: float | None,
    rate: str | None,
    known_models: tuple[str, ...],
    now: float,
) -> tuple[ApiKey, str]:
    """A key and its secret (192 random bits after the prefix); checks every field, naming what is wrong."""
    if not NAME_PATTERN.match(name):
        raise InvalidInput(f"the key name {name!r} is not allowed; use 1 to 64 letters, digits, '.', '-' or '_', starting with a letter or digit")
    if models is not None:
        unknown = sorted(set(models) - set(known_models))
        if unknown:
            raise InvalidInput(f"--models names {', '.join(unknown)}, which this server does not have; it has: {', '.join(known_models)}")
    if credits is not None and (credits < 0 or not math.isfinite(credits)):
        raise InvalidInput(f"--credits is {credits}; give a number of 0 or more (leave it out for unlimited credits)")
    if rate is not None:
        parse_rate(rate)
    secret = SECRET_PREFIX + secrets.token_urlsafe(24)
    key = ApiKey(
        id=secrets.token_hex(8),
        name=name,
        secret_hash=hash_secret(secret),
        models=models,
        credits=credits,
        rate=rate,
        created_at=now,
        last_used=None,
        webhook_secret="whsec_" + secrets.token_urlsafe(24),
    )
    return key, secret


def _rate_storage(settings: Settings) -> Storage:
    if settings.queue_url is None:
        return MemoryStorage()
    return RedisStorage(
        settings.queue_url,
        key_prefix=f"{settings.redis_prefix}_limits",
        socket_timeout=settings.store_timeout,
        socket_connect_timeout=settings.store_timeout,
    )


class Access:
    """The checks of a keyed request, in the order the hosted API answers them: 401, 403, 429, 406."""

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.enabled = settings.auth
        self.settings = settings
        self.store = store
        self._limiter: MovingWindowRateLimiter | None = None
        self._limiter_lock = threading.Lock()
        self._touched: dict[str, float] = {}

    def _rate_limiter(self) -> MovingWindowRateLimiter:
        # Made on first use: a server whose keys have no rate never connects a second Redis client.
        with self._limiter_lock:
            if self._limiter is None:
                self._limiter = MovingWindowRateLimiter(_rate_storage(self.settings))
            return self._limiter

    def authenticate(self, secret: str | None) -> ApiKey | None:
        """The key of the request; None when keys are off. Unauthorized (401) when it is missing or unknown."""
        if not self.enabled:
            return None
        if not secret:
            raise Unauthorized("this server needs an API key: send it in the x-api-key header (retouch keys create --name NAME makes one)")
        presented = hash_secret(secret.strip())
        key = self.store.key_by_hash(presented)
        if key is None or not hmac.compare_digest(key.secret_hash, presented):
            raise Unauthorized("the API key in x-api-key is not known to this server (mistyped, or revoked); check it, or ask the operator for one")
        now = time.monotonic()
        if now - self._touched.get(key.id, -math.inf) > TOUCH_EVERY:
            self._touched[key.id] = now
            try:
                self.store.touch_key(key.id)
            except BackendUnavailable:
                # Only the "last used" column waits for the next request; the request itself goes on.
                self._touched.pop(key.id, None)
        return key

    def authorize(self, key: ApiKey | None, slug: str) -> None:
        if key is not None and not key.may_use(slug):
            allowed = ", ".join(key.models or ()) or "none"
            raise Forbidden(f"the API key {key.name!r} may not use {slug}; it may use: {allowed}")

    def check_rate(self, key: ApiKey | None) -> None:
        """RateLimited (429, with Retry-After) when the key is over its rate; counts this request otherwise."""
        if key is None or key.rate is None:
            return
        item = parse_rate(key.rate)
        limiter = self._rate_limiter()
        try:
            if limiter.hit(item, key.id):
                return
            stats = limiter.get_window_stats(item, key.id)
        except Exception as error:
            if isinstance(error, InvalidInput):
                raise
            raise BackendUnavailable(f"the rate limit store did not answer ({type(error).__name__}); try again in a moment") from None
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"the API key {key.name!r} is over its rate of {key.rate}; try again in {wait} s",
            retry_after=wait,
        )

    def check_credits(self, key: ApiKey | None, price: float) -> None:
        """NotEnoughCredits (406) early, before any work; the charge itself is taken when the job is admitted."""
        if key is not None and key.credits is not None and key.credits + 1e-9 < price:
            raise not_enough_credits(key.credits, price)
