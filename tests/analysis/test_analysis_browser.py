"""The report in a real headless browser: every image loads, no broken link, tables present.

Skipped only when chromium is absent outside CI; in CI (``CI`` set) a missing browser fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed, and CI must check the report in a browser.")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def _chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_renders_in_headless_chromium(synthetic_report, tmp_path):
    browser = _browser()
    _, index = synthetic_report
    url = index.resolve().as_uri()
    done = _chromium(
        browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", url
    )
    dom = done.stdout
    assert "<body" in dom, done.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom).group(1)
    # the page's own script counts images once the window's load event has fired
    assert 'data-images-checked="yes"' in body, body
    images = int(re.search(r'data-images="(\d+)"', body).group(1))
    assert images == len(list((index.parent / "figures").glob("*.png"))) > 0
    assert 'data-broken-images="0"' in body
    assert dom.count("<table") >= 4
    assert dom.count("<tr>") > 20

    # no broken link: every local href/src resolves to a file (or an anchor on the page)
    anchors = set(re.findall(r'id="([^"]+)"', dom))
    for link in re.findall(r'(?:href|src)="([^"]+)"', dom):
        if link.startswith("#"):
            assert link[1:] in anchors, link
            continue
        target = urlparse(link)
        assert target.scheme in ("", "file"), link
        path = Path(unquote(target.path)) if target.scheme else index.parent / unquote(link)
        assert path.is_file(), link

    # a screenshot, kept out of git under artifacts/ for a person to look at
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    _chromium(
        browser,
        tmp_path / "profile",
        "--virtual-time-budget=10000",
        "--window-size=1200,2400",
        f"--screenshot={shot}",
        url,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_a_missing_figure_is_reported_by_the_page(synthetic_report, tmp_path):
    """The check above can fail: a page copied without its figures shows broken images."""
    browser = _browser()
    _, index = synthetic_report
    lonely = tmp_path / "index.html"
    shutil.copy(index, lonely)
    done = _chromium(
        browser,
        tmp_path / "profile",
        "--virtual-time-budget=10000",
        "--dump-dom",
        lonely.as_uri(),
    )
    body = re.search(r"<body([^>]*)>", done.stdout).group(1)
    assert 'data-images-checked="yes"' in body
    assert 'data-broken-images="0"' not in body
    assert "did not load" in done.stdout
