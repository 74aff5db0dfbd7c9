"""Unit tests for ``report --html``: a self-contained page whose charts render in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gpu_budget.plugin.history import fetch
from gpu_budget.plugin.html_report import render_html
from gpu_budget.plugin.periods import even_periods
from tests.unit.test_plugin_history import DAY, FakePrometheus

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

MEASURE = """
<script>
window.addEventListener('load', () => {
  const sizes = [...document.querySelectorAll('svg.chart')].map(svg => {
    const box = svg.getBoundingClientRect();
    const bars = [...svg.querySelectorAll('rect.bar')].map(r => r.getBBox());
    return {width: box.width, height: box.height, bars: bars.length,
            drawn: bars.filter(b => b.width > 0 && b.height > 0).length};
  });
  const out = document.createElement('pre');
  out.id = 'measured';
  out.textContent = JSON.stringify(sizes);
  document.body.appendChild(out);
});
</script>
"""


def page() -> str:
    return render_html(fetch(FakePrometheus(), even_periods(DAY, 24)), "team")


def test_the_page_needs_nothing_from_anywhere() -> None:
    html = page()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script" not in html and html.count("<svg") == 3
    assert "ml/llama" in html and "Idle spend" in html


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def test_the_charts_render_in_headless_chromium(tmp_path: Path) -> None:
    """Chromium lays the page out: every chart has a size and its bars are drawn."""
    browser = chromium()
    file = tmp_path / "report.html"
    file.write_text(page().replace("</body>", MEASURE + "</body>"))
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", file.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="measured">(.*?)</pre>', dom.stdout)
    assert match is not None, dom.stderr[-2000:]
    charts = json.loads(match.group(1).replace("&quot;", '"'))
    assert len(charts) == 3
    for chart in charts:
        assert chart["width"] > 0 and chart["height"] > 0
        assert chart["bars"] > 0 and chart["drawn"] == chart["bars"]
    # A picture for a person to look at (tests/unit leaves it in pytest's tmp dir).
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={shot}",
            "--window-size=820,1400",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
    shutil.copy(shot, Path("/tmp") / "gpubudget-report.png")
