"""Blobs of a job (decoded inputs, encoded outputs) in a folder per job under the home directory."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, name: str) -> Path:
        if not _SAFE_NAME.match(job_id) or not _SAFE_NAME.match(name):
            raise ValueError(f"unsafe blob name {job_id!r}/{name!r}")
        return self.root / job_id / name

    def put(self, job_id: str, name: str, data: bytes) -> None:
        """Write atomically, so a reader in another process never sees half a file."""
        path = self._path(job_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)

    def get(self, job_id: str, name: str) -> bytes | None:
        try:
            return self._path(job_id, name).read_bytes()
        except FileNotFoundError:
            return None

    def remove(self, job_id: str, name: str) -> None:
        self._path(job_id, name).unlink(missing_ok=True)

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self._path(job_id, "x").parent, ignore_errors=True)

    def job_ids(self, older_than: float | None = None) -> list[str]:
        """Ids of the job folders, optionally only those last modified before `older_than` (a timestamp)."""
        ids = []
        for entry in self.root.iterdir():
            try:
                if entry.is_dir() and (older_than is None or entry.stat().st_mtime < older_than):
                    ids.append(entry.name)
            except FileNotFoundError:
                continue
        return ids
