"""Which device an engine runs on, the onnxruntime providers for it, and how many CPU cores to use."""

from __future__ import annotations

import math
import os
from pathlib import Path

import onnxruntime

from retouch.errors import InvalidInput, ServiceUnavailable

DEVICES = ("auto", "cpu", "cuda")

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def cuda_available() -> bool:
    """Whether this onnxruntime build offers the CUDA execution provider."""
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def resolve_device(requested: str) -> str:
    """Turn a configured device ("auto", "cpu", "cuda") into the one to use: "cpu" or "cuda".

    "auto" picks CUDA when onnxruntime offers it. An explicit "cuda" that is not available is
    an error rather than a silent fallback, since the operator asked for it.
    """
    if requested not in DEVICES:
        raise InvalidInput(f"unknown device {requested!r}; use one of: {', '.join(DEVICES)}")
    if requested == "auto":
        return "cuda" if cuda_available() else "cpu"
    if requested == "cuda" and not cuda_available():
        offered = ", ".join(onnxruntime.get_available_providers())
        raise ServiceUnavailable(
            f"device 'cuda' was requested but onnxruntime offers only {offered}; "
            "install onnxruntime-gpu with a matching CUDA runtime, or set RETOUCH_DEVICE=cpu or auto"
        )
    return requested


def onnx_providers(device: str) -> list[str]:
    """The onnxruntime execution providers for a resolved device, in order of preference."""
    if device == "cuda":
        # CPU stays in the list so that operators CUDA lacks still run.
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    raise InvalidInput(f"unknown resolved device {device!r}; expected 'cpu' or 'cuda' (call resolve_device first)")


def _own_cgroup_paths(cgroup_root: Path, proc_self_cgroup: Path) -> list[Path]:
    """The cgroup v2 folder of this process, then the root (what a container sees as its own)."""
    folders = []
    try:
        for line in proc_self_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                relative = line[3:].strip().lstrip("/")
                if relative:
                    folders.append(cgroup_root / relative)
    except OSError:
        pass
    folders.append(cgroup_root)
    return folders


def _cgroup_quota_cores(cgroup_root: Path, proc_self_cgroup: Path) -> int | None:
    """Cores allowed by a cgroup CPU quota (v2 cpu.max, else v1 cfs quota), or None if unlimited."""
    for folder in _own_cgroup_paths(cgroup_root, proc_self_cgroup):
        try:
            fields = (folder / "cpu.max").read_text().split()
        except OSError:
            continue
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = int(fields[0]), int(fields[1])
            except ValueError:
                return None
            if quota > 0 and period > 0:
                return max(1, math.ceil(quota / period))
        return None
    try:
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    if quota > 0 and period > 0:
        return max(1, math.ceil(quota / period))
    return None


def available_cpu_cores(
    cgroup_root: Path = _CGROUP_ROOT,
    proc_self_cgroup: Path = _PROC_SELF_CGROUP,
) -> int:
    """CPU cores this process may really use: its affinity mask, capped by a cgroup quota.

    ``os.cpu_count()`` counts the host's cores; in a container limited to 2 of 64, running 64
    threads makes inference slower, not faster. The paths are parameters for tests.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_quota_cores(cgroup_root, proc_self_cgroup)
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def onnx_session(model_path: Path, device: str, reinstall_hint: str) -> onnxruntime.InferenceSession:
    """An onnxruntime session as every engine wants it: all the cores this process may use for one
    request at a time, full graph optimisation. ServiceUnavailable, with `reinstall_hint`, when the
    file is not a model onnxruntime can load."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = available_cpu_cores()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    try:
        return onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=onnx_providers(resolve_device(device)))
    except Exception as error:
        raise ServiceUnavailable(f"onnxruntime could not load {model_path}: {error}; {reinstall_hint}") from error
