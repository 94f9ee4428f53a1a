"""`retouch serve` and `retouch worker` on a home they cannot use: one line that names the folder and
the problem, exit status 1, no traceback."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retouch.cli import app

runner = CliRunner()


def start(command: str, home: Path, **environment: str) -> tuple[int, str]:
    result = runner.invoke(app, [command], env={"RETOUCH_HOME": str(home), **environment})
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_home_that_cannot_be_created(tmp_path, command):
    (tmp_path / "a-file").write_text("not a folder")
    code, output = start(command, tmp_path / "a-file" / "home")
    assert code == 1
    lines = output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in output
    assert str(tmp_path / "a-file" / "home") in lines[0] and "is not a folder" in lines[0]


def test_a_redis_that_does_not_answer(tmp_path):
    code, output = start("serve", tmp_path / "home", RETOUCH_QUEUE_URL="redis://127.0.0.1:1/0", RETOUCH_STORE_TIMEOUT="1", RETOUCH_LEASE="3")
    assert code == 1 and len(output.strip().splitlines()) == 1
    assert "redis://127.0.0.1:1/0" in output and "did not answer" in output


@pytest.fixture
def mount_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"this sandbox does not let root mount a tmpfs: {result.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_read_only_home(mount_tmpfs, command):
    folder = mount_tmpfs("read-only", "ro,size=1m")
    code, output = start(command, folder)
    assert code == 1 and len(output.strip().splitlines()) == 1
    assert str(folder) in output and "read-only" in output


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_full_home(mount_tmpfs, command):
    folder = mount_tmpfs("full", "size=256k")
    (folder / "weights").mkdir()
    descriptor = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(descriptor)
    code, output = start(command, folder)
    assert code == 1 and len(output.strip().splitlines()) == 1
    assert str(folder) in output and "is full" in output
