"""The `retouch` command: serve, worker, models list, models install."""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from retouch.config import Settings

app = typer.Typer(help="retouch: self-hosted image-editing inference service.", no_args_is_help=True)
models_app = typer.Typer(help="Model weights: list and install.", no_args_is_help=True)
app.add_typer(models_app, name="models")


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the command line's options on top; invalid ones end the program."""
    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        lines = [f"  RETOUCH_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']} (got {error.get('input')!r})" for error in exc.errors()]
        typer.echo("invalid settings:\n" + "\n".join(lines), err=True)
        raise typer.Exit(code=2) from None


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [RETOUCH_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [RETOUCH_PORT].")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker threads in this process; 0 = API only [RETOUCH_WORKERS].")] = None,
) -> None:
    """Run the HTTP API, with its workers in the same process (the embedded default)."""
    import uvicorn

    from retouch.api.app import create_app

    settings = load_settings(host=host, port=port, workers=workers)
    _configure_logging(settings)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False)


@app.command()
def worker(
    workers: Annotated[int, typer.Option(min=1, help="Worker threads in this process.")] = 1,
) -> None:
    """Run workers only, as a separate process beside `retouch serve` (same home directory)."""
    from retouch.jobs.service import Service
    from retouch.models import MODELS

    settings = load_settings()
    _configure_logging(settings)
    service = Service(settings, MODELS)
    consumer = service.start_workers(workers, embedded=False)
    assert consumer is not None
    try:
        consumer.run()
    finally:
        service.close()


@models_app.command("list")
def models_list() -> None:
    """Every engine's weight files and whether they are installed (or pulled, for the hub models)."""
    from retouch.weights import hub
    from retouch.weights.install import describe

    settings = load_settings()
    rows = describe(settings)
    typer.echo(f"weights folder: {settings.weights_path}")
    for row in rows:
        mark = "installed" if row["installed"] else "missing"
        size_mb = row["size"] / 1e6
        typer.echo(f"  {row['name']:<10} {row['engine']:<10} {row['filename']:<16} {size_mb:8.1f} MB  {mark:<9}  {row['license']}  from {row['source']}")
    typer.echo("pulled with `retouch models pull NAME` (needs the model hub):")
    for name, model in hub.HUB_MODELS.items():
        mark = "pulled" if hub.is_pulled(name, settings) else "missing"
        typer.echo(f"  {name:<10} {model.engine:<10} {mark:<9}  {model.license}  from {model.describe()}")


@models_app.command("install")
def models_install(
    names: Annotated[list[str] | None, typer.Argument(help="Weights to install; default: the default set.")] = None,
    force: Annotated[bool, typer.Option(help="Install again even if present.")] = False,
) -> None:
    """Install weight files into the home directory, each checked against its size and sha256."""
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
    names: Annotated[list[str], typer.Argument(help="Hub models to pull: owlv2, sam, lama.")],
    force: Annotated[bool, typer.Option(help="Pull again even if present.")] = False,
    trust_local: Annotated[
        bool, typer.Option("--trust-local", help="Record files you copied into the model's folder by hand as pulled.")
    ] = False,
) -> None:
    """Pull models from the model hub, pinned to a commit and checked against their sha256."""
    from retouch.errors import RetouchError
    from retouch.weights import hub

    settings = load_settings()
    try:
        folders = [hub.trust_local(name, settings) for name in names] if trust_local else hub.pull(names, settings, force=force)
    except RetouchError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(code=1) from None
    for folder in folders:
        typer.echo(f"ok  {folder}")


if __name__ == "__main__":
    app()
