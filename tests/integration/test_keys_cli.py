"""`retouch keys` as an operator types it, on both backends; the first start's admin key; --no-auth only on loopback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes import ALL_MODELS
from fastapi.testclient import TestClient
from images import b64
from typer.testing import CliRunner

from retouch.api.app import create_app
from retouch.cli import app, ensure_first_key
from retouch.config import Settings

runner = CliRunner()


@pytest.fixture
def photo() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (24, 32, 3), dtype=np.uint8)


@pytest.fixture
def environment(tmp_path: Path, backend_settings: dict[str, str]) -> dict[str, str]:
    env = {
        "RETOUCH_HOME": str(tmp_path / "home"),
        "RETOUCH_AUTH": "true",
        "RETOUCH_MIN_FREE_BYTES": "0",
    }
    env.update({f"RETOUCH_{name.upper()}": value for name, value in backend_settings.items()})
    return env


def keys(environment: dict[str, str], *arguments: str) -> tuple[int, str]:
    result = runner.invoke(app, ["keys", *arguments], env=environment)
    return result.exit_code, result.output


def secret_of(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("rt_"))


def test_create_list_credit_and_revoke(environment, photo):
    code, output = keys(
        environment,
        "create",
        "--name",
        "alice",
        "--models",
        "magic-eraser",
        "--credits",
        "10",
        "--rate",
        "60/minute",
    )
    assert code == 0, output
    alice = secret_of(output)
    assert "shown only this once" in output and "whsec_" in output
    code, listing = keys(environment, "list")
    assert code == 0 and "alice" in listing and "magic-eraser" in listing and "60/minute" in listing and "never" in listing
    assert alice not in listing and "whsec_" not in listing
    assert keys(environment, "credit", "alice", "+5") == (
        0,
        "key 'alice' now has 15 credits\n",
    )
    assert keys(environment, "credit", "alice", "-20") == (
        0,
        "key 'alice' now has 0 credits\n",
    )
    code, output = keys(environment, "credit", "alice", "5")
    assert code == 2 and "+N" in output
    code, output = keys(environment, "create", "--name", "bob", "--credits", "0")
    bob = secret_of(output)

    settings = Settings(**{name.removeprefix("RETOUCH_").lower(): value for name, value in environment.items()})
    body = {"image": b64(photo)}
    with TestClient(create_app(settings, models=ALL_MODELS, workers=1)) as client:
        assert client.post("/v1/fake-invert", json=body, headers={"x-api-key": alice}).status_code == 403
        assert client.post("/v1/fake-invert", json=body, headers={"x-api-key": bob}).status_code == 406
        keys(environment, "credit", "bob", "+1")
        answer = client.post("/v1/fake-invert", json=body, headers={"x-api-key": bob})
        assert answer.status_code == 200 and answer.headers["x-remaining-credits"] == "0"
        code, listing = keys(environment, "list")
        assert "never" not in next(line for line in listing.splitlines() if line.startswith("bob"))
        assert keys(environment, "revoke", "bob") == (0, "revoked key 'bob'\n")
        assert client.post("/v1/fake-invert", json=body, headers={"x-api-key": bob}).status_code == 401


def test_mistakes_are_one_line_errors(environment):
    assert keys(environment, "create", "--name", "alice")[0] == 0
    for arguments, expected in [
        (("create", "--name", "alice"), "exists already"),
        (("create", "--name", "bob", "--rate", "often"), "60/minute"),
        (("create", "--name", "bob", "--models", "nope"), "nope"),
        (("create", "--name", "bob", "--credits", "-1"), "0 or more"),
        (("create", "--name", "b o b"), "not allowed"),
        (("revoke", "nobody"), "no key named 'nobody'"),
        (("credit", "alice", "+1"), "unlimited credits"),
    ]:
        code, output = keys(environment, *arguments)
        assert code == 2 and expected in output and "Traceback" not in output, (
            arguments,
            output,
        )


def test_the_first_start_makes_an_admin_key_once(tmp_path, capsys, photo):
    settings = Settings(home=tmp_path / "home", auth=True, min_free_bytes=0)
    ensure_first_key(settings, ALL_MODELS)
    printed = capsys.readouterr().err
    secret = secret_of("\n".join(line.strip() for line in printed.splitlines()))
    assert "x-api-key" in printed and "shown only this once" in printed
    ensure_first_key(settings, ALL_MODELS)
    assert capsys.readouterr().err == ""
    with TestClient(create_app(settings, models=ALL_MODELS, workers=1)) as client:
        assert (
            client.post(
                "/v1/fake-invert",
                json={"image": b64(photo)},
                headers={"x-api-key": secret},
            ).status_code
            == 200
        )


def test_no_auth_is_refused_off_loopback(tmp_path):
    result = runner.invoke(
        app,
        ["serve", "--no-auth", "--host", "0.0.0.0"],
        env={"RETOUCH_HOME": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "0.0.0.0" in result.output and "127.0.0.1" in result.output
