"""Build one uv environment in a scratch directory (no caching, no locking here).

Steps (each a ``trio.run_process``, so the event loop never blocks and a cancel
kills the running uv):

1. ``uv venv --relocatable --python <version or this interpreter> <work>/venv``
   (relocatable: the venv is renamed into place afterwards, and a plain venv's
   scripts would keep pointing at the old path);
2. ``UV_PROJECT_ENVIRONMENT=<work>/venv uv sync --frozen --no-install-project --no-dev --compile-bytecode``
   (guests run with ``-B``: without the .pyc files every cold job pays ~0.4 s more
   to import pyarrow)
   in ``<work>/project`` holding the plugin's pyproject.toml + uv.lock;
3. smoke test: ``<work>/venv/bin/python -I -c "import pyarrow"``.

Any failure raises EnvError carrying the tail of uv's stderr.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import trio

from casparian_trio.errors import EnvError
from casparian_trio.protocol.messages import PrepareEnv

logger = logging.getLogger(__name__)

# How much of uv's output goes into an error message.
ERROR_TAIL_CHARS = 2000


def find_uv() -> str:
    """The uv binary: on PATH, else the one shipped by the ``uv`` PyPI package."""
    found = shutil.which("uv")
    if found:
        return found
    try:
        from uv import find_uv_bin

        return str(find_uv_bin())
    except (ImportError, FileNotFoundError) as exc:
        raise EnvError("uv is not installed (pip install uv)") from exc


async def build(spec: PrepareEnv, work: Path) -> Path:
    """Build the environment of ``spec`` as ``work/venv``; return the venv dir."""
    if spec.pyproject is None:
        raise EnvError(
            f"PREPARE_ENV for {spec.env_hash} carries no pyproject.toml; uv needs the "
            "project file next to uv.lock (publish the plugin with --pyproject)",
            env_hash=spec.env_hash,
        )
    project = work / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(spec.pyproject)
    (project / "uv.lock").write_text(spec.lockfile)
    venv = work / "venv"
    uv = find_uv()
    python = spec.python_version or sys.executable
    await _run(spec, [uv, "venv", "--relocatable", "--python", python, str(venv)], work)
    env = {"UV_PROJECT_ENVIRONMENT": str(venv)}
    await _run(
        spec,
        [uv, "sync", "--frozen", "--no-install-project", "--no-dev", "--compile-bytecode"],
        project,
        env,
    )
    await _run(spec, [str(venv / "bin" / "python"), "-I", "-c", "import pyarrow"], work)
    return venv


async def _run(
    spec: PrepareEnv, argv: list[str], cwd: Path, extra: dict[str, str] | None = None
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    # Only PyPI is reachable: never let uv try to download a Python build.
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env.update(extra or {})
    logger.debug("env %s: running %s", spec.env_hash[:12], argv[1:3])
    result = await trio.run_process(
        argv,
        cwd=cwd,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
        capture_stdout=True,
        capture_stderr=True,
    )
    if result.returncode != 0:
        tail = (
            (result.stderr or result.stdout).decode("utf-8", "replace").strip()[-ERROR_TAIL_CHARS:]
        )
        step = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:2]))
        raise EnvError(
            f"building environment {spec.env_hash} failed at `{step}` (exit {result.returncode}): {tail}",
            env_hash=spec.env_hash,
        )


def tree_size(path: Path) -> int:
    """Apparent size in bytes of the files under ``path`` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total
