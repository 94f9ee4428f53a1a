"""The `retouch` command: serve, worker, run, models list, models install, models pull."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from retouch.config import Settings
from retouch.logs import configure_logging

if TYPE_CHECKING:
    from retouch.models.base import Model

app = typer.Typer(help="retouch: self-hosted image-editing inference service.", no_args_is_help=True)
models_app = typer.Typer(help="Model weights: list and install.", no_args_is_help=True)
app.add_typer(models_app, name="models")
keys_app = typer.Typer(help="API keys: create, list, revoke, credit.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the command line's options on top; invalid ones end the program."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"  RETOUCH_{name}: {message} (got {error.get('input')!r})" if name else f"  {message}")
        typer.echo("invalid settings:\n" + "\n".join(lines), err=True)
        raise typer.Exit(code=2) from None


def choose_slugs(models: dict[str, Model], names: str | None) -> tuple[str, ...]:
    """The slugs a worker serves: those named (comma-separated), or every built one."""
    built = tuple(slug for slug, model in models.items() if model.built)
    if not names:
        return built
    chosen = tuple(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
    unknown = [name for name in chosen if name not in built]
    if unknown or not chosen:
        typer.echo(
            f"error: unknown or unbuilt model(s) {', '.join(unknown) or '(none given)'}; choose from: {', '.join(built)}",
            err=True,
        )
        raise typer.Exit(code=2)
    return chosen


_HOME_PROBLEMS = {
    errno.ENOSPC: "is full",
    errno.EDQUOT: "is over its disk quota",
    errno.EROFS: "is on a read-only file system",
    errno.EACCES: "is not writable by this user",
    errno.EPERM: "is not writable by this user",
    errno.ENOTDIR: "is not a folder (or a file stands in its path)",
    errno.EEXIST: "is not a folder (a file has its name)",
}


def check_start(settings: Settings, models: dict[str, Model]) -> None:
    """Before serving: the home can be written to, and the job backend opens. Else one line, exit 1."""
    from retouch.errors import RetouchError
    from retouch.jobs.backends import open_backend

    home = settings.home
    try:
        for folder in (home, settings.weights_path):
            folder.mkdir(parents=True, exist_ok=True)
        probe = home / f".retouch-probe-{os.getpid()}"
        with open(probe, "wb") as file:
            file.write(b"\0" * 4096)
            file.flush()
            os.fsync(file.fileno())
        probe.unlink()
    except OSError as error:
        problem = _HOME_PROBLEMS.get(error.errno or 0, "cannot be used")
        typer.echo(
            f"error: the home {home} {problem} ({error.strerror}); fix it, or set RETOUCH_HOME to another folder",
            err=True,
        )
        raise typer.Exit(code=1) from None
    try:
        open_backend(settings, tuple(models)).close()
    except (RetouchError, RuntimeError, OSError) as error:
        message = error.message if isinstance(error, RetouchError) else str(error)
        where = settings.queue_url or f"the home {home}"
        typer.echo(f"error: the job system on {where} cannot start: {message}", err=True)
        raise typer.Exit(code=1) from None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def ensure_first_key(settings: Settings, models: dict[str, Model]) -> None:
    """With keys on and none in the store, make an admin key and print it, once."""
    import time

    from retouch.jobs.access import ADMIN_KEY_NAME, new_key
    from retouch.jobs.backends import open_backend

    backend = open_backend(settings, tuple(models))
    try:
        if backend.store.key_count() > 0:
            return
        key, secret = new_key(ADMIN_KEY_NAME, None, None, None, tuple(models), time.time())
        backend.store.create_key(key)
    finally:
        backend.close()
    typer.echo(
        f"\nretouch: no API key existed, so this one was made: {ADMIN_KEY_NAME!r} (every model, unlimited credits, no rate limit).\n"
        f"It is shown only this once; keep it:\n\n    {secret}\n\n"
        "Send it in the x-api-key header:\n"
        f"    export RETOUCH_API_KEY={secret}\n"
        f'    curl -H "x-api-key: $RETOUCH_API_KEY" http://{settings.host}:{settings.port}/v1/models\n'
        "In the playground, paste it into the API key field.\n"
        "More keys: retouch keys create --name NAME [--models a,b] [--credits N] [--rate 60/minute]\n",
        err=True,
    )


def run_server(settings: Settings, models: dict[str, Model]) -> None:
    import uvicorn

    from retouch.api.app import create_app
    from retouch.api.protocol import guarded_protocol

    configure_logging(settings)
    if not settings.auth and not is_loopback(settings.host):
        typer.echo(
            f"error: keys are off (--no-auth, RETOUCH_AUTH=false) and the server would listen on {settings.host}, "
            "where anyone on the network could use it; listen on 127.0.0.1, or turn keys on",
            err=True,
        )
        raise typer.Exit(code=2)
    check_start(settings, models)
    if settings.auth:
        ensure_first_key(settings, models)
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    address = f"http://[{shown_host}]:{settings.port}" if ":" in shown_host else f"http://{shown_host}:{settings.port}"
    typer.echo(f"retouch: the playground is at {address}/ and the API reference at {address}/docs", err=True)
    uvicorn.run(
        create_app(settings, models=models),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        log_config=None,
        http=guarded_protocol(settings),
    )


def run_worker(
    settings: Settings,
    models: dict[str, Model],
    slugs: tuple[str, ...],
    threads: int,
    metrics_port: int | None,
) -> int:
    from retouch.jobs.process import supervise

    configure_logging(settings)
    check_start(settings, models)
    return supervise(settings, models, slugs, threads, metrics_port)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [RETOUCH_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [RETOUCH_PORT].")] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker threads in this process; 0 = API only [RETOUCH_WORKERS]."),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="No API keys (only on a loopback address) [RETOUCH_AUTH=false].",
        ),
    ] = False,
) -> None:
    """Run the HTTP API, with its workers in the same process (the embedded default). On the first start
    with keys on, an admin key is made and printed once."""
    from retouch.models import MODELS

    run_server(
        load_settings(host=host, port=port, workers=workers, auth=False if no_auth else None),
        MODELS,
    )


@app.command()
def worker(
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated slugs to serve; default: every built one."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker threads (jobs run at once).")] = 1,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve this worker's Prometheus metrics on this port.",
        ),
    ] = None,
) -> None:
    """Run workers only, beside `retouch serve --workers 0`: on the same home (embedded), or anywhere with
    the same RETOUCH_QUEUE_URL (a fleet). SIGTERM drains: running jobs end, no new ones are taken."""
    from retouch.models import MODELS

    settings = load_settings()
    raise typer.Exit(code=run_worker(settings, MODELS, choose_slugs(MODELS, models), workers, metrics_port))


@app.command("run")
def run_command(
    slug: Annotated[str, typer.Argument(help="The model, e.g. background-eraser.")],
    parameters: Annotated[
        list[str] | None,
        typer.Argument(help="NAME=VALUE pairs; an image parameter may be a file path. Values are typed as JSON would."),
    ] = None,
    image: Annotated[str | None, typer.Option(help="The image: a file, a URL, or a folder or glob of them (a batch).")] = None,
    mask: Annotated[str | None, typer.Option(help="The mask image (magic-eraser), a file or a URL.")] = None,
    ref_image: Annotated[str | None, typer.Option("--ref-image", help="The reference image (bg-replace), a file or a URL.")] = None,
    prompt: Annotated[str | None, typer.Option(help="The prompt.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE, as many times as needed.")] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write the image (a batch: the folder); default: SLUG-ID.EXT here."),
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, max=64, help="Requests at a time, in a batch.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="In a batch, redo images whose output exists.")] = False,
    server: Annotated[str | None, typer.Option(help="Send the requests to this retouch server instead of running them here.")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", help="The key for --server (default: RETOUCH_API_KEY).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each result.")] = 600.0,
    progress: Annotated[bool, typer.Option(help="A progress bar for a batch (on stderr).")] = True,
) -> None:
    """Run a model on one image or a folder of them, in this process (no server) or on --server. Exit code 0 when
    every image is done, 1 when some failed, 2 for a usage error; results on stdout, errors on stderr."""
    import json

    from retouch import batch
    from retouch.models import MODELS

    settings = load_settings()
    configure_logging(settings)
    if slug not in MODELS:
        typer.echo(f"error: unknown model {slug!r}; choose from: {', '.join(MODELS)}", err=True)
        raise typer.Exit(code=2)
    model = MODELS[slug]
    fields: dict[str, str] = {}
    images: dict[str, str | Path] = {}
    for pair in [*(parameters or []), *(param or [])]:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            typer.echo(f"error: {pair!r} is not NAME=VALUE", err=True)
            raise typer.Exit(code=2)
        if name in model.all_image_fields() and (Path(value).expanduser().is_file() or batch.is_url(value)):
            images[name] = value
        else:
            fields[name] = value
    for name, value in (("image", image), ("mask", mask), ("ref_image", ref_image)):
        if value is not None:
            images[name] = value
    if prompt is not None:
        fields["prompt"] = prompt
    try:
        sources, is_batch = batch.collect_inputs(str(images["image"])) if "image" in images else ([], False)
    except batch.UsageError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    runner = batch.OnServer(server, api_key, timeout) if server else batch.InProcess(settings, slug, timeout)
    try:
        if is_batch:
            if output is None:
                typer.echo("error: a batch needs -o FOLDER for its outputs", err=True)
                raise typer.Exit(code=2)
            others = {name: value for name, value in images.items() if name != "image"}
            outcomes = batch.run_batch(runner, slug, sources, output, fields, others, jobs, overwrite, progress)
            failed = [outcome for outcome in outcomes if outcome.error]
            for outcome in failed:
                typer.echo(f"failed: {outcome.source}: {outcome.error}", err=True)
            summary = {
                "done": sum(1 for outcome in outcomes if not outcome.error and not outcome.skipped),
                "skipped": sum(1 for outcome in outcomes if outcome.skipped),
                "failed": [{"image": outcome.source, "error": outcome.error} for outcome in failed],
                "outputs": [path for outcome in outcomes for path in outcome.written],
            }
            typer.echo(json.dumps(summary))
            raise typer.Exit(code=1 if failed else 0)
        try:
            request_id, outputs, metrics = runner.run(slug, fields, images)
        except Exception as error:  # noqa: BLE001 - the request's own message is the answer
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=1) from None
        target = output or Path(f"{slug}-{(request_id or 'result')[:8]}")
        written = batch.write_outputs(outputs, target)
        typer.echo(json.dumps({"request_id": request_id, "outputs": written, "metrics": metrics}))
    finally:
        runner.close()


@models_app.command("list")
def models_list() -> None:
    """Every entry of the weights registry: kind of source, size, whether it is installed, licence, origin."""
    from retouch.weights.install import describe
    from retouch.weights.registry import GROUPS

    settings = load_settings()
    typer.echo(f"weights folder: {settings.weights_path}")
    for row in describe(settings):
        mark = ("installed" if row["installed"] else "missing") + (" (default)" if row["default"] else "")
        size = f"{row['size'] / 1e6:8.1f} MB" if row["size"] < 1e9 else f"{row['size'] / 1e9:8.1f} GB"
        typer.echo(f"  {row['name']:<21} {row['kind']:<13} {row['engine']:<10} {size}  {mark:<19}  {row['license']}  from {row['source']}")
        if row["pinned_difference"]:
            typer.echo(f"  {'':<21} note: {row['pinned_difference']}")
    typer.echo("install with `retouch models install NAME`; hub models with `retouch models pull NAME` (needs the model hub)")
    for group, members in GROUPS.items():
        typer.echo(f"  {group:<21} pulls {', '.join(members)}")


@models_app.command("install")
def models_install(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Registry entries to install (see `retouch models list`); default: the default set."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Install again even if present.")] = False,
) -> None:
    """Install weights into the weights folder, each checked against its size and sha256 (hub models are pulled)."""
    from retouch.errors import RetouchError
    from retouch.weights.install import install

    settings = load_settings()
    try:
        paths = install(names or None, settings, progress=True, force=force)
    except RetouchError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from None
    for path in paths:
        typer.echo(f"ok  {path}")


@models_app.command("pull")
def models_pull(
    names: Annotated[
        list[str],
        typer.Argument(help="Hub models to pull: owlv2, sam, lama, or bg-replace (its four checkpoints, about 13 GB)."),
    ],
    force: Annotated[bool, typer.Option(help="Pull again even if present.")] = False,
    trust_local: Annotated[
        bool,
        typer.Option(
            "--trust-local",
            help="Record files you copied into the model's folder by hand as pulled.",
        ),
    ] = False,
) -> None:
    """Pull models from the model hub, pinned to a commit and checked against their sha256."""
    from retouch.errors import RetouchError
    from retouch.weights import hub
    from retouch.weights.store import expand

    settings = load_settings()
    try:
        if trust_local:
            folders = [hub.trust_local(name, settings) for name in expand(names)]
        else:
            folders = hub.pull(names, settings, force=force)
    except RetouchError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from None
    for folder in folders:
        typer.echo(f"ok  {folder}")


if __name__ == "__main__":
    app()


def _key_store(settings: Settings) -> Any:
    from retouch.errors import RetouchError
    from retouch.jobs.backends import open_backend
    from retouch.models import MODELS

    try:
        return open_backend(settings, tuple(MODELS))
    except (RetouchError, RuntimeError, OSError) as error:
        message = error.message if isinstance(error, RetouchError) else str(error)
        typer.echo(
            f"error: the key store on {settings.queue_url or settings.home} cannot be opened: {message}",
            err=True,
        )
        raise typer.Exit(code=1) from None


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=2)


def _show_credits(credits: float | None) -> str:
    return "unlimited" if credits is None else f"{credits:.6f}".rstrip("0").rstrip(".")


@keys_app.command("create")
def keys_create(
    name: Annotated[
        str,
        typer.Option("--name", help="A name to know it by (letters, digits, . - _)."),
    ],
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated slugs it may use; default: all."),
    ] = None,
    credits: Annotated[
        float | None,
        typer.Option("--credits", help="Credits it starts with; default: unlimited."),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option("--rate", help="Rate limit, e.g. 60/minute; default: none."),
    ] = None,
) -> None:
    """Make a key and print its secret, once (only its hash is stored), and its webhook signing secret."""
    import time

    from retouch.errors import RetouchError
    from retouch.jobs.access import new_key
    from retouch.models import MODELS

    allowed = tuple(dict.fromkeys(slug.strip() for slug in models.split(",") if slug.strip())) if models else None
    backend = _key_store(load_settings())
    try:
        key, secret = new_key(name, allowed, credits, rate, tuple(MODELS), time.time())
        backend.store.create_key(key)
    except RetouchError as error:
        _fail(error.message)
    finally:
        backend.close()
    typer.echo(f"created key {name!r}: models {', '.join(allowed) if allowed else 'all'}, credits {_show_credits(credits)}, rate {rate or 'none'}")
    typer.echo("its secret, shown only this once (send it as x-api-key):")
    typer.echo(secret)
    typer.echo(f"its webhook signing secret (X-Retouch-Signature): {key.webhook_secret}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key: name, models, credits left, rate, created, last used. Never a secret."""
    import datetime

    backend = _key_store(load_settings())
    try:
        keys = backend.store.list_keys()
    finally:
        backend.close()

    def when(moment: float | None) -> str:
        return "never" if moment is None else datetime.datetime.fromtimestamp(moment, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    rows = [("NAME", "MODELS", "CREDITS", "RATE", "CREATED", "LAST USED")]
    for key in keys:
        rows.append(
            (
                key.name,
                ",".join(key.models) if key.models else "all",
                _show_credits(key.credits),
                key.rate or "none",
                when(key.created_at),
                when(key.last_used),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def keys_revoke(name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Delete a key: every replica refuses it (401) from its next request."""
    backend = _key_store(load_settings())
    try:
        deleted = backend.store.delete_key(name)
    finally:
        backend.close()
    if not deleted:
        _fail(f"there is no key named {name!r}; `retouch keys list` shows them")
    typer.echo(f"revoked key {name!r}")


@keys_app.command("credit", context_settings={"ignore_unknown_options": True})
def keys_credit(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    change: Annotated[str, typer.Argument(help="+N to add credits, -N to take them (never below 0).")],
) -> None:
    """Add or take credits, atomically (requests in flight are charged against the new balance)."""
    import math

    try:
        delta = float(change)
    except ValueError:
        delta = math.nan
    if not change.startswith(("+", "-")) or not math.isfinite(delta):
        _fail(f"the change {change!r} is not a signed number; write +N to add credits or -N to take them, e.g. +100")
    backend = _key_store(load_settings())
    try:
        key = backend.store.key_by_name(name)
        if key is None:
            _fail(f"there is no key named {name!r}; `retouch keys list` shows them")
        assert key is not None
        if key.credits is None:
            _fail(f"the key {name!r} has unlimited credits; there is nothing to add or take")
        updated = backend.store.add_credits(name, delta)
    finally:
        backend.close()
    assert updated is not None
    typer.echo(f"key {name!r} now has {_show_credits(updated.credits)} credits")
