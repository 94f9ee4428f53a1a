"""One typed Settings object, read from the environment (prefix ``RETOUCH_``) and validated at start."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, ByteSize, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path(os.path.expanduser("~/.cache/retouch"))


class Settings(BaseSettings):
    """Everything an operator can set. Each field is read from ``RETOUCH_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="RETOUCH_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=_default_home, description="Folder for job data, the queue database and weights.")
    weights_dir: Path | None = Field(default=None, description="Folder of the weight files; defaults to HOME/weights.")
    host: str = Field(default="127.0.0.1", description="Address `retouch serve` listens on.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `retouch serve` listens on.")
    workers: int = Field(default=1, ge=0, le=64, description="Worker threads `retouch serve` runs in its own process (0: API only).")
    sync_timeout: float = Field(
        default=25.0,
        gt=0,
        description="Seconds a /v1 request waits for its job before answering 504 with the request id. "
        "Below the segmind SDK's 30 s client timeout, so that its users get the id.",
    )
    retention: float = Field(default=3600.0, gt=0, description="Seconds a finished request and its images are kept.")
    max_body_bytes: int = Field(
        default=70_000_000,
        ge=1024,
        description="Largest request body; over it: 413. Above max_image_bytes, as base64 makes an image a third larger.",
    )
    max_image_bytes: int = Field(default=50_000_000, ge=1024, description="Largest image fetched from a URL or given as base64.")
    max_image_pixels: int = Field(default=4096 * 4096, ge=64 * 64, description="Largest image, in pixels (width x height).")
    public_base_url: AnyHttpUrl | None = Field(
        default=None, description="Base URL that result links use (e.g. https://retouch.example.com); default: taken from the request."
    )
    allow_private_urls: bool = Field(default=False, description="Allow image URLs on loopback and private networks. Only for a trusted network.")
    fetch_connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to connect to an image URL.")
    fetch_read_timeout: float = Field(default=20.0, gt=0, description="Seconds to wait for each read from an image URL.")
    max_queued: int = Field(default=1000, ge=1, description="Requests that may wait in the queue; past it: 429.")
    fetch_total_timeout: float = Field(
        default=30.0, gt=0, description="Seconds one image URL may take in all (waiting for a slot, redirects, the whole body)."
    )
    fetch_concurrency: int = Field(default=32, ge=1, le=1024, description="Image URLs one server process fetches at once.")
    fetch_concurrency_per_host: int = Field(default=4, ge=1, le=1024, description="Image URLs fetched at once from any one host.")
    header_timeout: float = Field(default=10.0, gt=0, description="Seconds a client has to send a request's headers; past it: 408 and closed.")
    body_timeout: float = Field(default=20.0, gt=0, description="Seconds a request body may stall between two reads; past it: 408.")
    max_header_bytes: int = Field(default=65_536, ge=1024, description="Largest request line and headers, in bytes; past it: 431.")
    min_free_bytes: ByteSize = Field(
        default=ByteSize(200_000_000),
        description="Free space the home's disk (embedded) or Redis's maxmemory (fleet) must keep; below it /readyz fails (e.g. 200MB).",
    )
    admit_without_workers: bool = Field(
        default=False,
        description="Accept /v2 requests for a slug that no live worker serves (for a fleet that starts workers on demand); "
        "by default they are refused with 503.",
    )
    idle_poll: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="Seconds an idle worker waits before looking at the queue again when no wake-up arrives.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where engines run.")
    background_eraser_model: Literal["u2net-int8", "u2net", "u2netp", "isnet"] = Field(
        default="u2net-int8",
        description="Weights of background-eraser (and of bg-replace's subject): U²-Net with int8 weights (made at install), "
        "fp32 U²-Net, U²-Net-p, or ISNet (`retouch models install isnet`).",
    )
    magic_eraser_engine: Literal["auto", "patchmatch", "lama"] = Field(
        default="auto", description="Engine of magic-eraser: PatchMatch (weight-free), LaMa (pulled), or auto (LaMa when pulled)."
    )
    text_mask_engine: Literal["auto", "coco", "open"] = Field(
        default="auto",
        description="Engine of the text-to-mask slugs: the offline COCO detector, the open-vocabulary one, or auto "
        "(open when its weights are installed).",
    )
    text_mask_refiner: Literal["u2net-int8", "u2net", "u2netp"] = Field(
        default="u2net-int8", description="U²-Net variant that refines the offline detector's boxes to shapes."
    )
    bg_replace_engine: Literal["auto", "diffusion", "composite"] = Field(
        default="auto",
        description="Engine of bg-replace: the generative pipeline (SDXL inpainting + ControlNet + IP-Adapter, pulled), "
        "the offline composite onto ref_image, or auto (diffusion when its checkpoints are pulled and torch is installed).",
    )
    bg_replace_resolution: int = Field(
        default=1024,
        ge=64,
        le=2048,
        multiple_of=64,
        description="bg-replace's diffusion engine works at an area of about this many pixels squared (SDXL's 1024); "
        "lower is faster and worse.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log lines as text, or one JSON object each (for log collectors).")
    queue_url: str | None = Field(
        default=None,
        description="redis://HOST:PORT/DB puts the queue, job records, images, heartbeats and events on that Redis "
        "(a fleet of API replicas and workers on several hosts); unset: SQLite and files under HOME (one machine).",
    )
    redis_prefix: str = Field(
        default="retouch",
        pattern=r"^[A-Za-z0-9_]{1,40}$",
        description="Prefix of every Redis key, so that several deployments can share one Redis.",
    )
    store_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Seconds any one call to the job store (Redis, or SQLite's lock wait) may take before it counts as failed.",
    )
    lease: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a worker owns a running job without renewing it (renewed every third of it). "
        "A job whose worker died runs again after about this long.",
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="Times a job is started before a worker that keeps dying on it makes it FAILED.")
    deadline: float = Field(default=600.0, gt=0, description="Seconds a job may run before it is FAILED and its worker recycled.")
    deadlines: dict[str, float] = Field(
        default_factory=dict,
        description='Per-slug deadlines in seconds, over `deadline`, as JSON: {"magic-eraser": 120}.',
    )
    engine_memory_budget: ByteSize | None = Field(
        default=None,
        description="Memory the loaded engines of one worker process may hold (e.g. 8GB); past it the least recently "
        "used idle engines are unloaded. Default: 80% of this machine's memory.",
    )

    auth: bool = Field(
        default=True,
        description="Require an API key (x-api-key) on every request but /healthz, /readyz and /metrics. Off (--no-auth) only on a loopback address.",
    )
    prices: dict[str, float] = Field(
        default_factory=dict,
        description='Credits a request of each slug costs, as JSON: {"magic-eraser": 2}; a slug not named costs 1 (bg-replace: per sample).',
    )
    metrics_enabled: bool = Field(default=True, description="Serve Prometheus metrics on /metrics (open, like /healthz).")
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Origins a browser may call the API from, as JSON: ["https://app.example.com"], or ["*"] for any '
        "(then without credentials). Empty: CORS off.",
    )
    webhook_attempts: int = Field(default=5, ge=1, le=20, description="Times a webhook is tried before it is given up.")
    webhook_backoff: float = Field(default=1.0, gt=0, le=300, description="Seconds before the first retry of a webhook; doubled each time.")
    webhook_timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds one webhook delivery may take.")
    webhook_secret: str | None = Field(
        default=None,
        description="Secret that signs webhooks when keys are off (--no-auth); with keys, each key has its own.",
    )

    @field_validator("home", "weights_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r} is not a Redis URL; use redis://HOST:PORT/DB, rediss://... or unix:///path/to/socket")
        return value

    @field_validator("deadlines")
    @classmethod
    def _positive_deadlines(cls, value: dict[str, float]) -> dict[str, float]:
        for slug, seconds in value.items():
            if seconds <= 0:
                raise ValueError(f"the deadline of {slug!r} is {seconds}; give a number of seconds above 0")
        return value

    @field_validator("prices")
    @classmethod
    def _non_negative_prices(cls, value: dict[str, float]) -> dict[str, float]:
        for slug, price in value.items():
            if price < 0:
                raise ValueError(f"the price of {slug!r} is {price}; give a number of credits of 0 or more")
        return value

    def price_of(self, slug: str) -> float:
        return self.prices.get(slug, 1.0)

    @model_validator(mode="after")
    def _lease_above_store_timeout(self) -> Settings:
        # A lease that a single slow store call can outlive would let two workers own one job.
        if self.lease < 3 * self.store_timeout:
            raise ValueError(
                f"lease ({self.lease:g} s) must be at least 3 times store_timeout ({self.store_timeout:g} s); "
                "raise RETOUCH_LEASE or lower RETOUCH_STORE_TIMEOUT"
            )
        return self

    @property
    def fleet(self) -> bool:
        """Whether the job system is on Redis (several hosts) rather than embedded under HOME."""
        return self.queue_url is not None

    def deadline_of(self, slug: str) -> float:
        return self.deadlines.get(slug, self.deadline)

    @cached_property
    def weights_path(self) -> Path:
        return self.weights_dir or self.home / "weights"

    @cached_property
    def jobs_path(self) -> Path:
        return self.home / "jobs"

    @cached_property
    def run_path(self) -> Path:
        """Folder of the notification sockets of the processes that share this home."""
        return self.home / "run"

    def prepare_folders(self) -> None:
        for folder in (self.home, self.weights_path, self.jobs_path, self.run_path):
            folder.mkdir(parents=True, exist_ok=True)
