"""`retouch run`: one request through the same intake and job system, in this process, from files."""

from __future__ import annotations

import json

import numpy as np
from images import decode, png_bytes
from typer.testing import CliRunner

from retouch.cli import app


def test_run_erases_from_files_and_writes_the_image(tmp_path, monkeypatch):
    rows, cols = np.mgrid[0:96, 0:128]
    photo = np.stack([rows * 2, cols * 2, (rows + cols) % 32 * 8], axis=-1).astype(np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[30:60, 40:80] = 255
    (tmp_path / "photo.png").write_bytes(png_bytes(photo))
    (tmp_path / "mask.png").write_bytes(png_bytes(mask))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app,
        ["run", "magic-eraser", "image=photo.png", "mask=mask.png", "grow_mask=0", "seed=3", "output_format=png", "-o", "out.png"],
        env={"RETOUCH_HOME": str(tmp_path / "home"), "RETOUCH_LOG_LEVEL": "warning"},
    )
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output.strip().splitlines()[-1])
    assert answer["outputs"] == ["out.png"] and answer["metrics"]["engine"] == "patchmatch" and answer["metrics"]["seed"] == 3
    erased = decode((tmp_path / "out.png").read_bytes())
    assert erased.shape == photo.shape
    assert np.array_equal(erased[mask == 0], photo[mask == 0])
    assert not np.array_equal(erased[mask == 255], photo[mask == 255])


def test_run_refuses_a_bad_parameter_with_the_intakes_message(tmp_path):
    result = CliRunner().invoke(app, ["run", "magic-eraser", "image=x", "mask=y", "grow_mask=500"], env={"RETOUCH_HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert "grow_mask=500 is out of range: allowed 0 to 100" in result.output


def _folder_of_photos(folder, corrupt: bool = True):
    from skimage import data

    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        (folder / f"{name}.png").write_bytes(png_bytes(getattr(data, name)()[::4, ::4]))
    if corrupt:
        (folder / "broken.jpg").write_bytes(b"not an image at all")
    (folder / "notes.txt").write_text("not an image, not taken")


def test_a_folder_with_a_corrupt_file_runs_the_rest_and_exits_1(tmp_path, installed_weights_dir):
    photos, out = tmp_path / "photos", tmp_path / "out"
    _folder_of_photos(photos)
    env = {"RETOUCH_HOME": str(tmp_path / "home"), "RETOUCH_WEIGHTS_DIR": str(installed_weights_dir), "RETOUCH_LOG_LEVEL": "warning"}
    arguments = ["run", "background-eraser", "--image", str(photos), "-o", str(out), "--jobs", "2", "-p", "return_mask=false"]
    result = CliRunner().invoke(app, arguments, env=env)
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["done"] == 3 and summary["skipped"] == 0
    assert [entry["image"] for entry in summary["failed"]] == [str(photos / "broken.jpg")]
    assert "broken.jpg" in result.stderr and summary["failed"][0]["error"]
    assert sorted(path.name for path in out.iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert decode((out / "chelsea.png").read_bytes()).shape[2] == 4  # the RGBA cut-out
    # Again: the done ones are skipped, unless --overwrite.
    before = (out / "coffee.png").stat().st_mtime_ns
    again = CliRunner().invoke(app, arguments, env=env)
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 3 and (out / "coffee.png").stat().st_mtime_ns == before
    (photos / "broken.jpg").unlink()
    redone = CliRunner().invoke(app, [*arguments, "--overwrite", "--no-progress"], env=env)
    assert redone.exit_code == 0 and json.loads(redone.stdout.strip().splitlines()[-1])["done"] == 3
    assert (out / "coffee.png").stat().st_mtime_ns != before


def test_usage_errors_exit_2(tmp_path):
    env = {"RETOUCH_HOME": str(tmp_path / "home")}
    assert CliRunner().invoke(app, ["run", "nope", "--image", "x.png"], env=env).exit_code == 2
    assert CliRunner().invoke(app, ["run", "background-eraser", "--image", str(tmp_path / "missing.png")], env=env).exit_code == 2
    (tmp_path / "empty").mkdir()
    assert CliRunner().invoke(app, ["run", "background-eraser", "--image", str(tmp_path / "empty"), "-o", "x"], env=env).exit_code == 2
    assert CliRunner().invoke(app, ["run", "background-eraser", "-p", "nonsense"], env=env).exit_code == 2


def test_server_mode_sends_a_glob_to_a_server(tmp_path, weights_settings):
    from servers import serving

    from retouch.api.app import create_app

    photos, out = tmp_path / "photos", tmp_path / "out"
    _folder_of_photos(photos, corrupt=False)
    settings = weights_settings.model_copy(update={"auth": False, "min_free_bytes": 0})
    with serving(create_app(settings, workers=1)) as base:
        result = CliRunner().invoke(
            app,
            ["run", "background-eraser", "--image", str(photos / "c*.png"), "-o", str(out), "--server", base, "--no-progress"],
            env={"RETOUCH_HOME": str(tmp_path / "home")},
        )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["done"] == 2 and sorted(path.name for path in out.iterdir()) == ["chelsea.png", "coffee.png"]
    assert decode((out / "coffee.png").read_bytes()).ndim == 2  # the mask, the default
