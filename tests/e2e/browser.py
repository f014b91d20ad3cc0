"""Headless Chromium for the end-to-end tests: a screenshot and the DOM after scripts ran.

Debian's ``chromium`` package (``.ci/run`` installs it when it is missing). Each
call runs one browser process with a profile of its own under the test's
folder, as root too (``--no-sandbox``), bounded by ``BROWSER_TIMEOUT_S``. Tests
that need it call ``require_browser()``, which skips with the reason only
where no browser is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# A hang guard for one browser run, not a speed limit (about 2 s on an idle machine).
BROWSER_TIMEOUT_S = 90
WINDOW = "1280,900"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Where screenshots are kept (CASPARIAN_TEST_ARTIFACTS overrides): tests/artifacts/.
ARTIFACTS = Path(
    os.environ.get("CASPARIAN_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts"
)


def require_browser() -> str:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no headless browser: install Debian's chromium (apt-get install -y chromium); "
        ".ci/run installs it when apt can"
    )


def _run(browser: str, profile: Path, *args: str) -> str:
    profile.mkdir(parents=True, exist_ok=True)
    argv = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW}",
        *args,
    ]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, (
        f"{browser} failed ({result.returncode}): {result.stderr[-2000:]}"
    )
    return result.stdout


def screenshot(browser: str, url: str, name: str, profile: Path) -> Path:
    """A PNG of ``url`` as the browser renders it, kept under ``ARTIFACTS``; its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    _run(browser, profile, f"--screenshot={path}", url)
    assert path.stat().st_size > 1000, f"{path} is too small to show a page"
    print(f"screenshot of {url}: {path}")
    return path


def dump_dom(browser: str, url: str, profile: Path) -> str:
    """The page's DOM after load, as the browser built it."""
    return _run(browser, profile, "--dump-dom", url)
