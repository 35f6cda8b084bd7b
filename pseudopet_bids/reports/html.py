"""Building blocks of the HTML reports: one page skeleton with inline CSS, escaped tables and
figures, and a link checker used by the tests.

Pages reference their figures by relative path (``sub-<L>/figures/…png``, ``figures/…png``) and
load nothing from the network: no scripts, fonts or style sheets from elsewhere.
"""

from __future__ import annotations

import html
import io
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#222;
     line-height:1.45;background:#fff}
nav{position:sticky;top:0;background:#24425c;padding:.5em 1.5em;z-index:2}
nav a{color:#fff;margin-right:1.2em;text-decoration:none;font-size:.95em}
main{padding:0 1.5em 3em;max-width:1250px}
h1{font-size:1.6em;margin:.8em 0 .2em} h2{border-bottom:2px solid #24425c;padding-bottom:.15em;
   margin-top:1.6em} h3{margin-top:1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}
th{background:#eef2f6} td.text,th.text{text-align:left}
figure{margin:.8em 0} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:.88em;color:#555;margin-top:.25em}
.note{background:#fff7e0;border-left:4px solid #e0a800;padding:.4em .8em;margin:.6em 0}
.ok{color:#1b7a1b} .warn{color:#b35c00} .muted{color:#777}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:.15em 1em;font-size:.9em}
dl.kv dt{font-weight:600} dl.kv dd{margin:0;word-break:break-all}
pre{background:#f5f5f5;padding:.6em;overflow-x:auto;font-size:.85em}
details{margin:.5em 0} summary{cursor:pointer;font-weight:600}
.cards{display:flex;flex-wrap:wrap;gap:.6em;margin:.6em 0}
.card{border:1px solid #ccd6e0;border-radius:4px;padding:.4em .8em;background:#f7f9fb}
.card b{display:block;font-size:1.3em}
nav a.sub{font-size:.85em;opacity:.85}
ul.references{padding-left:1.2em;font-size:.9em} ul.references li{margin:.25em 0}
.flicker{position:relative;display:inline-block;max-width:100%}
.flicker img{display:block;max-width:100%;border:1px solid #ddd}
.flicker img.frame-b{position:absolute;top:0;left:0;animation:flick-b 2.4s steps(1) infinite}
.flicker .frame-label{position:absolute;top:.4em;left:.4em;background:#24425c;color:#fff;
   padding:.1em .5em;border-radius:3px;font-size:.85em}
.flicker .frame-label.a{animation:flick-a 2.4s steps(1) infinite}
.flicker .frame-label.b{animation:flick-b 2.4s steps(1) infinite}
.flicker:hover img.frame-b,.flicker:hover .frame-label{animation-play-state:paused}
@keyframes flick-a{0%{opacity:0}50%{opacity:1}}
@keyframes flick-b{0%{opacity:1}50%{opacity:0}}
@media (prefers-reduced-motion:reduce){.flicker img.frame-b,.flicker .frame-label{animation:none}
   .flicker .frame-label.a{opacity:0} .flicker:hover img.frame-b,.flicker:hover .frame-label.b{
   opacity:0} .flicker:hover .frame-label.a{opacity:1}}
.errors li{margin:.2em 0} .errors .level{font-weight:600}
"""


def esc(text: object) -> str:
    """HTML-escaped ``str(text)``."""
    return html.escape(str(text), quote=True)


def page(title: str, body: str, nav: list[tuple[str, str]] | None = None) -> str:
    """A complete HTML document.

    Parameters
    ----------
    title
        Page title (also the first heading).
    body
        Inner HTML of ``<main>`` after the heading (already escaped where needed).
    nav
        ``(anchor, label)`` pairs for the sticky navigation bar (anchors without ``#``).
    """
    links = "".join(f'<a href="#{esc(a)}">{esc(label)}</a>' for a, label in (nav or []))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + (f"<nav>{links}</nav>\n" if links else "")
            + f"<main>\n<h1>{esc(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n")


def section(anchor: str, title: str, content: str) -> str:
    """``<section id=anchor><h2>title</h2>content</section>``."""
    return f'<section id="{esc(anchor)}">\n<h2>{esc(title)}</h2>\n{content}\n</section>\n'


def _cell(value: object, float_fmt: str) -> tuple[str, bool]:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a", True
    if isinstance(value, bool):
        return ("yes" if value else "no"), True
    if isinstance(value, float):
        return float_fmt.format(value), False
    if isinstance(value, int):
        return str(value), False
    return esc(value), True


def table_html(df: pd.DataFrame, float_fmt: str = "{:.3g}", caption: str | None = None) -> str:
    """An escaped HTML table of a data frame (NaN/None → ``n/a``, booleans → yes/no)."""
    if df is None or df.empty:
        return '<p class="muted">(none)</p>'
    head = "".join(f'<th class="text">{esc(c)}</th>' for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for value in rec:
            text, is_text = _cell(value.item() if hasattr(value, "item") else value, float_fmt)
            cells.append(f'<td class="text">{text}</td>' if is_text else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def figure_html(src: str, caption: str, alt: str | None = None) -> str:
    """A ``<figure>`` with a relative image path and an escaped caption."""
    return (f'<figure><img src="{esc(src)}" alt="{esc(alt or caption)}" loading="lazy">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def flicker_html(src_a: str, label_a: str, src_b: str, label_b: str, caption: str) -> str:
    """Two images of one layout shown in turn (every 1.2 s), a ``<figure>`` that works
    offline and without scripts: CSS animation only, paused while the pointer is over it (with
    reduced motion asked for: still, the second image shown while the pointer is over it).

    Parameters
    ----------
    src_a, label_a
        The first image (relative path) and its label (escaped), e.g. the reference image.
    src_b, label_b
        The second image, drawn over the first, e.g. the registered image.
    caption
        Figure caption (escaped).
    """
    return (f'<figure><div class="flicker">'
            f'<img src="{esc(src_a)}" alt="{esc(label_a)}" loading="lazy">'
            f'<img class="frame-b" src="{esc(src_b)}" alt="{esc(label_b)}" loading="lazy">'
            f'<span class="frame-label a">{esc(label_a)}</span>'
            f'<span class="frame-label b">{esc(label_b)}</span></div>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def details(summary: str, content: str, open_: bool = False) -> str:
    """A collapsible ``<details>`` block (``summary`` escaped, ``content`` HTML)."""
    return (f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>\n"
            f"{content}\n</details>\n")


def note(text: str) -> str:
    """A highlighted note paragraph (escaped)."""
    return f'<p class="note">{esc(text)}</p>'


def key_values(items: dict[str, object]) -> str:
    """A definition list of key/value pairs (escaped)."""
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>"
                                        for k, v in items.items()) + "</dl>"


def png_bytes(fig, dpi: int = 90, max_colors: int | None = None,
              max_bytes: int | None = None, tight: bool = True) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it.

    Parameters
    ----------
    max_colors
        When given (≤ 256), the image is quantized to a palette PNG of at most that many colours
        (median cut, no dithering): 2-3 times smaller for slice mosaics, with no visible loss.
    max_bytes
        With ``max_colors``: when the palette PNG is still larger, coarser palettes are tried
        (an octree palette gives another factor of 2 on photographic slices, with slight
        banding of smooth gradients); the smallest result is returned.
    tight
        Crop the figure to its drawn content (default). False keeps the figure's own size, so
        that figures of one layout (the frames of a flicker) have the same pixels.
    """
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        if max_colors:
            # the pixels only, to be quantized below: an uncompressed TIFF (the same RGBA
            # pixels as the PNG, without compressing and decompressing them)
            fig.savefig(buf, format="tiff", dpi=dpi, bbox_inches="tight" if tight else None,
                        facecolor=fig.get_facecolor())
        else:
            # no "Software" text chunk: the bytes then depend on the pixels only (reruns and
            # matplotlib upgrades that draw the same give the same file)
            fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None,
                        facecolor=fig.get_facecolor(), metadata={"Software": None})
    finally:
        plt.close(fig)
    if not max_colors:
        return buf.getvalue()
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as im:
        rgb = im.convert("RGB")
    colors = min(int(max_colors), 256)
    best = b""
    for method, n in ((Image.Quantize.MEDIANCUT, colors), (Image.Quantize.FASTOCTREE, colors)):
        small = io.BytesIO()
        rgb.quantize(colors=n, method=method, dither=Image.Dither.NONE).save(
            small, format="PNG", optimize=True)
        data = small.getvalue()
        if not best or len(data) < len(best):
            best = data
        if max_bytes is None or len(best) <= max_bytes:
            break
    return best


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(str(values["id"]))
        for attr in ("src", "href"):
            if values.get(attr) and not (tag == "link" and attr == "href"
                                         and values.get("rel") == "canonical"):
                self.refs.append(str(values[attr]))


def check_links(html_path: Path) -> list[str]:
    """Broken references of a page: missing local files, unknown ``#anchors``, and any
    reference to the network (a report must work offline). Empty when all is well."""
    html_path = Path(html_path)
    parser = _Refs()
    parser.feed(html_path.read_text(encoding="utf-8"))
    broken = []
    for ref in parser.refs:
        url = urlparse(ref)
        if url.scheme in ("http", "https", "ftp") or ref.startswith("//"):
            broken.append(f"{ref} (network reference)")
        elif url.scheme in ("data", "mailto"):
            continue
        elif ref.startswith("#"):
            if ref[1:] not in parser.ids:
                broken.append(f"{ref} (no such anchor)")
        elif url.scheme in ("", "file"):
            target = (html_path.parent / unquote(url.path)).resolve()
            if not target.exists():
                broken.append(f"{ref} (missing file)")
        else:
            broken.append(f"{ref} (unexpected scheme)")
    return broken
