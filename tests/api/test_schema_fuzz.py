"""Schemathesis over /openapi.json: requests the schema allows and requests it does not, on a real
server with the real registry and safe fake engines. Fails on a 5xx other than the documented 503
(weights missing) and 501 (a slug not built in this release), on any answer the schema does not describe,
on schema-invalid data that is accepted, and on schema-valid data refused for a reason the schema
could have said (a range, a required or unknown name, an empty value)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import schemathesis
from fakes import FAKE_MODELS
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from images import b64
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance
from servers import serving

from retouch.api.app import create_app
from retouch.config import Settings
from retouch.models import MODELS

pytestmark = pytest.mark.slow

# Fakes that cannot hurt the test process or hang it (no crash, no gate, no long sleep).
SAFE_FAKES = ("fake-invert", "fake-mask-echo", "fake-exc-in-predict", "fake-refuses-in-predict", "fake-missing-weights")
DOCUMENTED_SERVER_ERRORS = {501, 503}
# The intake's words for refusals the schema can express (models/validation.py).
SCHEMA_EXPRESSIBLE = ("unknown parameter", "missing required parameter", "is out of range", "is not allowed: use one of",
                      "is not valid: expected", "should have at least", "should have at most", "is empty")  # fmt: skip


def describe(error: BaseException) -> str:
    """The error, and those inside it (Hypothesis groups what it found, and wraps a flaky one's first failure),
    each by its type and the head of its message: the generated case's long repr must not hide the cause."""
    inner = getattr(error, "exceptions", ())
    notes = "".join(f"\n    note: {note[:300]}" for note in getattr(error, "__notes__", ()))
    return f"{type(error).__name__}: {str(error)[:600]}{notes}" + "".join(f"\n  - {describe(each)}" for each in inner)


def conformance_test(operation: schemathesis.APIOperation, mode: GenerationMode):
    # Schema-invalid bodies as JSON only: a form's encoding drops some invalid shapes (keys that are not
    # field names), so the request that arrives is valid and rightly accepted.
    strategy = operation.as_strategy(mode)
    if mode is GenerationMode.NEGATIVE:
        strategy = strategy.filter(lambda case: case.media_type in (None, "application/json"))

    @given(case=strategy)
    @settings(max_examples=25, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def conforms(case: schemathesis.Case) -> None:
        # Data the schema allows may still be refused: a string is not always a decodable image, a
        # prompt not always one the offline detector reads. Those 400s are checked below instead.
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance, not_a_server_error])
        assert response.status_code < 500 or response.status_code in DOCUMENTED_SERVER_ERRORS, response.text
        if mode is GenerationMode.POSITIVE and response.status_code == 400:
            error = response.json()["error"]
            assert not any(words in error for words in SCHEMA_EXPRESSIBLE), f"schema-valid data refused: {error}"

    return conforms


def test_every_answer_is_described_and_no_undocumented_server_error(tmp_path):
    models = {**MODELS, **{slug: FAKE_MODELS[slug] for slug in SAFE_FAKES}}
    configured = Settings(home=tmp_path / "home", weights_dir=tmp_path / "weights", sync_timeout=5, min_free_bytes=0)
    failures: list[str] = []
    with serving(create_app(configured, models=models, workers=1)) as base:
        # The first erase compiles PatchMatch's kernels (or loads them): not what is measured here.
        hole = np.zeros((64, 64), np.uint8)
        hole[24:40, 24:40] = 255
        tiny = {"image": b64(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "mask": b64(hole)}
        assert httpx.post(f"{base}/v1/magic-eraser", json=tiny, timeout=120).status_code == 200
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 2 * len(models)
        for operation in operations:
            for mode in GenerationMode:
                try:
                    conformance_test(operation, mode)()
                except Unsatisfiable:
                    # An operation whose every parameter is a free string has no schema-invalid input.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except (Exception, BaseExceptionGroup) as error:  # noqa: BLE001 - every operation is tried; all failures are reported
                    failures.append(f"{operation.label} ({mode.value}): {describe(error)[:3000]}")
    assert not failures, "\n\n".join(failures)
