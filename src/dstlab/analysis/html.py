"""The report page: one self-contained HTML file (inline CSS, figures as relative links to files
next to it), readable straight from disk with no server."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class FigureRef:
    png: str  # path relative to index.html
    caption: str

    @property
    def svg(self) -> str:
        return self.png[: -len(".png")] + ".svg"


@dataclass
class Section:
    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text, escaped on render
    figures: list[FigureRef] = field(default_factory=list)
    tables: list[tuple[str, str]] = field(default_factory=list)  # (caption, table HTML)
    files: list[str] = field(default_factory=list)  # CSV files of this section
    missing: str | None = None  # why the section has no content


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1150px;
padding:1.2em 2em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.summary{background:#f5f7fa;border-left:4px solid #4a78b5;padding:.6em 1em}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}
table{border-collapse:collapse;font-size:.85em;margin:.4em 0 1em}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:right;white-space:nowrap}
th{background:#f0f0f0}.scroll{overflow-x:auto;max-width:100%}
td:first-child,th:first-child{text-align:left}
.missing{color:#777;font-style:italic}.files a{margin-right:1em}
#broken{background:#fde8e8;border:1px solid #d88;padding:.5em}
nav a{margin-right:1em}
"""

# Tells a reader (and the browser test) when a figure failed to load: images next to the page
# are referenced relatively, so a page copied without its folder shows this warning.
_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
  document.body.setAttribute('data-images', String(images.length));
  document.body.setAttribute('data-broken-images', String(broken.length));
  document.body.setAttribute('data-images-checked', 'yes');
  if (broken.length) {
    var note = document.getElementById('broken');
    note.hidden = false;
    note.textContent = broken.length + ' figure(s) did not load: keep the figures folder next to this page.';
  }
});
"""


def table_html(frame: pd.DataFrame, float_format: str = "{:.4g}") -> str:
    """A plain HTML table (numbers formatted, everything escaped)."""

    def fmt(value) -> str:
        if isinstance(value, float):
            return "" if pd.isna(value) else float_format.format(value)
        return str(value)

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render(title: str, subtitle: str, summary: str, sections: list[Section]) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1><p>{e(subtitle)}</p>",
        '<div id="broken" hidden></div>',
        "<nav>" + "".join(f'<a href="#{e(s.key)}">{e(s.title)}</a>' for s in sections) + "</nav>",
        f'<h2 id="summary">Summary</h2><p class="summary">{e(summary)}</p>',
    ]
    for s in sections:
        parts.append(f'<section id="{e(s.key)}"><h2>{e(s.title)}</h2>')
        if s.missing:
            parts.append(f'<p class="missing">{e(s.missing)}</p></section>')
            continue
        parts.extend(f"<p>{e(p)}</p>" for p in s.paragraphs)
        for f in s.figures:
            parts.append(
                f'<figure><a href="{e(f.svg)}"><img src="{e(f.png)}" alt="{e(f.caption)}"></a>'
                f"<figcaption>{e(f.caption)} (click for SVG)</figcaption></figure>"
            )
        for caption, table in s.tables:
            parts.append(f'<h3>{e(caption)}</h3><div class="scroll">{table}</div>')
        if s.files:
            links = "".join(f'<a href="{e(name)}">{e(name)}</a>' for name in s.files)
            parts.append(f'<p class="files">Data: {links}</p>')
        parts.append("</section>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts)
