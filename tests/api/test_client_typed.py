"""The client's per-slug methods: generated from the server's OpenAPI schema, checked against it, and used."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
from fakes import ALL_MODELS
from servers import serving

from retouch.api.app import create_app
from retouch.client import AsyncClient, Client
from retouch.config import Settings
from retouch.models import MODELS

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "generate_client.py"


def generator():
    spec = importlib.util.spec_from_file_location("generate_client", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_typed_methods_are_what_the_servers_schema_makes():
    script = generator()
    assert script.TARGET.read_text(encoding="utf-8") == script.generate(script.openapi()), (
        "src/retouch/client/typed.py is not what the server's schema makes: run scripts/generate_client.py and commit it"
    )


def test_the_playgrounds_test_schemas_are_the_servers():
    script = generator()
    assert script.SCHEMAS_TARGET.read_text(encoding="utf-8") == script.input_schemas(), (
        "tests/web/schemas.json is not what the server's models say: run scripts/generate_client.py and commit it"
    )


def test_every_slug_is_a_method_with_its_parameters():
    for slug, model in MODELS.items():
        for client_class in (Client, AsyncClient):
            signature = inspect.signature(getattr(client_class, slug.replace("-", "_")))
            expected = set(model.Input.model_fields) - {"base64"}
            assert expected | {"self", "timeout", "webhook"} == set(signature.parameters), slug
    assert inspect.iscoroutinefunction(AsyncClient.bg_replace) and not inspect.iscoroutinefunction(Client.bg_replace)


def test_a_misspelt_parameter_fails_before_any_request():
    # Nothing listens on the discard port: a request would be a RetouchError, not a TypeError.
    with Client("http://127.0.0.1:9", max_retries=0) as client:
        with pytest.raises(TypeError, match="grow_msk"):
            client.magic_eraser(image=b"x", mask=b"y", grow_msk=3)
        with pytest.raises(TypeError):
            client.bg_replace(b"x", b"y")  # prompt is required


@pytest.mark.slow
def test_a_typed_method_runs_on_a_live_server(tmp_path):
    settings = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights", auth=False, min_free_bytes=0)
    photo = np.zeros((48, 64, 3), np.uint8)
    photo[:, :, 1] = 120
    photo[20:28, 30:40] = (250, 0, 0)
    mask = np.zeros((48, 64), np.uint8)
    mask[18:30, 28:42] = 255
    with serving(create_app(settings, models=ALL_MODELS, workers=1)) as base:
        with Client(base) as client:
            result = client.magic_eraser(photo, mask, grow_mask=2, seed=3, output_format="png", timeout=120)
        filled = result.to_numpy()
        assert filled.shape == photo.shape and result.metrics["engine"] == "patchmatch" and result.metrics["seed"] == 3
        # The red square is gone, the green around it kept.
        assert filled[20:28, 30:40, 0].mean() < 60 and np.array_equal(filled[:10], photo[:10])

        async def again():
            async with AsyncClient(base) as client:
                return await client.magic_eraser(photo, mask, grow_mask=2, seed=3, output_format="png", timeout=120)

        assert np.array_equal(asyncio.run(again()).to_numpy(), filled)
