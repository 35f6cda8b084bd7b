"""Screenshots of report pages with headless Chromium (for checking the layout; optional).

Nothing here is needed to write the reports; it needs a Chromium (``chromium``,
``chromium-browser`` or ``google-chrome`` on PATH; Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pseudopet_bids.io.files import atomic_write_bytes

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Path of the first of ``chromium``, ``chromium-browser``, ``google-chrome`` on PATH."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: Path, png_path: Path, width: int = 1300, height: int = 2400,
               timeout: float = 60) -> Path:
    """Render a local HTML page to a PNG of ``width`` × ``height`` pixels.

    Runs headless Chromium with a fresh profile, no sandbox, no GPU and no background network
    traffic, on ``file://<absolute path>``.

    Raises
    ------
    RuntimeError
        No Chromium on PATH, the page does not exist, Chromium failed or timed out, or it wrote
        no PNG.
    """
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium found on PATH (looked for "
                           + ", ".join(BROWSERS) + "); install one, e.g. "
                           "apt-get install -y --no-install-recommends chromium")
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise RuntimeError(f"cannot screenshot {html_path}: no such file")
    png_path = Path(png_path).resolve()
    with tempfile.TemporaryDirectory(prefix="pseudopet-chromium-") as profile:
        # Chromium writes into the profile folder; the PNG is then moved into place atomically
        shot = Path(profile) / "screenshot.png"
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--screenshot={shot}",
               f"--window-size={int(width)},{int(height)}", html_path.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"Chromium did not finish within {timeout:g} s rendering "
                               f"{html_path}") from exc
        except OSError as exc:
            raise RuntimeError(f"cannot run {browser}: {exc}") from exc
        if proc.returncode != 0 or not shot.is_file() or shot.stat().st_size == 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
            raise RuntimeError(f"Chromium failed to screenshot {html_path} (exit "
                               f"{proc.returncode}){': ' + tail if tail else ''}")
        atomic_write_bytes(png_path, shot.read_bytes())
    return png_path


__all__ = ["find_chromium", "screenshot"]
