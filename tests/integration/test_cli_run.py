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
