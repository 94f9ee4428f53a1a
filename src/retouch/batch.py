"""`retouch run` on one image or a folder of them: in this process (the same intake, job system and engines as
the server) or against a server (the Python client), N at a time, with a progress bar and a summary.

A failed file never stops the others; an output that exists is skipped unless asked to overwrite.
"""

from __future__ import annotations

import asyncio
import glob
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
OUTPUT_SUFFIXES = (".png", ".jpg", ".webp")


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit code 2)."""


@dataclass(frozen=True)
class Output:
    data: bytes
    content_type: str


@dataclass
class Outcome:
    source: str
    written: list[str] = field(default_factory=list)
    skipped: bool = False
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


class Runner(Protocol):
    def run(self, slug: str, fields: dict[str, str], images: dict[str, str | Path]) -> tuple[str | None, list[Output], dict[str, Any]]:
        """One request: its id, its images and its metrics; raises with a message when it fails."""


def is_pattern(text: str) -> bool:
    return any(character in text for character in "*?[")


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def collect_inputs(image: str) -> tuple[list[str], bool]:
    """The images to run and whether it is a batch (a folder or a glob): files sorted by name."""
    if is_url(image):
        return [image], False
    path = Path(image).expanduser()
    if path.is_dir():
        files = sorted(str(child) for child in path.iterdir() if child.is_file() and child.suffix.lower() in IMAGE_SUFFIXES)
    elif is_pattern(image):
        files = sorted(match for match in glob.glob(str(path)) if Path(match).is_file())
    elif path.is_file():
        return [str(path)], False
    else:
        raise UsageError(f"--image {image}: no such file, folder or URL")
    if not files:
        raise UsageError(f"--image {image}: no image files there ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files, True


def suffix_of(content_type: str) -> str:
    return "." + content_type.split("/")[-1].replace("jpeg", "jpg")


def existing_output(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{suffix}" for suffix in OUTPUT_SUFFIXES if (folder / f"{stem}{suffix}").exists()), None)


def write_outputs(outputs: list[Output], target: Path, numbered_from_second: bool = True) -> list[str]:
    """Write each image: the first at `target` (its suffix from the image's type when `target` has none), the
    others beside it as NAME-1, NAME-2, ..."""
    written = []
    for index, output in enumerate(outputs):
        path = target if target.suffix else target.with_suffix(suffix_of(output.content_type))
        if index and numbered_from_second:
            path = path.with_name(f"{path.stem}-{index}{path.suffix}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(output.data)
        written.append(str(path))
    return written


class InProcess:
    """Requests through this process's own job service and a worker (embedded), or the fleet's workers with
    RETOUCH_QUEUE_URL: the same intake as the server.

    One worker thread, whatever --jobs says: an engine already uses every core for one image, and two at once
    only fight over them (on two cores, --jobs 2 with two worker threads ran at 0.79 of a plain loop). The
    requests in flight still overlap reading, submitting and writing with the inference."""

    def __init__(self, settings: Any, slug: str, timeout: float) -> None:
        from retouch.jobs.service import JobService
        from retouch.jobs.worker import WorkerPool
        from retouch.models import MODELS

        self.models = MODELS
        self.timeout = timeout
        self.service = JobService(settings, MODELS)
        self.pool = None if settings.fleet else WorkerPool(settings, MODELS, self.service.backend, (slug,), threads=1)
        if self.pool is not None:
            self.pool.start(warm_up=False)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
        self.service.close()

    def run(self, slug: str, fields: dict[str, str], images: dict[str, str | Path]) -> tuple[str | None, list[Output], dict[str, Any]]:
        from retouch.errors import RetouchError
        from retouch.jobs.records import Status
        from retouch.models.validation import coerce_form_fields

        model = self.models[slug]
        uploads, texts = {}, dict(fields)
        for name, value in images.items():
            if isinstance(value, Path) or not is_url(str(value)):
                uploads[name] = Path(value).expanduser().read_bytes()
            else:
                texts[name] = str(value)
        try:
            record = self.service.submit(slug, coerce_form_fields(model.Input, texts), uploads)
        except RetouchError as error:
            raise RuntimeError(error.message) from None
        if not asyncio.run(self.service.wait(record.id, self.timeout)):
            raise RuntimeError(f"request {record.id} did not finish within {self.timeout:g} s")
        record = self.service.get(record.id)
        if record.status is not Status.COMPLETED:
            raise RuntimeError(f"request {record.id} {record.status.value}: {record.error}")
        outputs = [Output(result.data, result.content_type) for result in self.service.outputs(record)]
        return record.id, outputs, record.public_metrics()


class OnServer:
    """Requests to a retouch server through the Python client (/v2, polled)."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        import logging

        from retouch.client import Client

        # httpx logs every request at INFO: on a command line's stderr that buries the failures.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.timeout = timeout
        self.client = Client(base_url, api_key=api_key)

    def close(self) -> None:
        self.client.close()

    def run(self, slug: str, fields: dict[str, str], images: dict[str, str | Path]) -> tuple[str | None, list[Output], dict[str, Any]]:
        import json

        from retouch.client import RetouchError

        params: dict[str, Any] = {}
        for name, text in fields.items():
            try:
                params[name] = json.loads(text)
            except ValueError:
                params[name] = text
        for name, value in images.items():
            params[name] = Path(value).expanduser() if not is_url(str(value)) else str(value)
        try:
            result = self.client.run(slug, timeout=self.timeout, interval=0.25, **params)
        except RetouchError as error:
            raise RuntimeError(error.detail) from None
        types = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}

        def content_type(data: bytes) -> str:
            return next((kind for magic, kind in types.items() if data.startswith(magic)), "image/png")

        return result.request_id, [Output(data, content_type(data)) for data in result.images], result.metrics


@contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[Callable[[Outcome], None]]:
    """A rich progress bar on stderr with the rate and the time left; a no-op when not enabled."""
    if not enabled:
        yield lambda outcome: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task("retouch", total=total, rate="")

        def advance(outcome: Outcome) -> None:
            speed = progress.tasks[0].speed
            progress.update(task, advance=1, rate=f"{speed:.2f}/s" if speed else "")

        yield advance


def run_batch(
    runner: Runner,
    slug: str,
    sources: list[str],
    output_folder: Path,
    fields: dict[str, str],
    other_images: dict[str, str | Path],
    jobs: int,
    overwrite: bool,
    show_progress: bool,
) -> list[Outcome]:
    """Every source image through `runner`, `jobs` at a time; an outcome per source, in the sources' order."""
    output_folder.mkdir(parents=True, exist_ok=True)
    outcomes = {source: Outcome(source) for source in sources}
    pending = []
    for source in sources:
        existing = existing_output(output_folder, Path(source).stem)
        if existing is not None and not overwrite:
            outcomes[source].skipped = True
            outcomes[source].written = [str(existing)]
        else:
            pending.append(source)

    def one(source: str) -> Outcome:
        outcome = outcomes[source]
        try:
            outcome.request_id, outputs, outcome.metrics = runner.run(slug, fields, {**other_images, "image": source})
            outcome.written = write_outputs(outputs, output_folder / Path(source).stem)
        except Exception as error:  # noqa: BLE001 - a failed file is reported and the others go on
            outcome.error = str(error) or type(error).__name__
        return outcome

    with progress_bar(len(pending), show_progress) as advance, ThreadPoolExecutor(max_workers=max(1, jobs)) as executor:
        for future in as_completed([executor.submit(one, source) for source in pending]):
            advance(future.result())
    return [outcomes[source] for source in sources]
