"""HTML building blocks: one self-contained page, no JavaScript, no network.

Every value that comes from a data file (sample ids, gene names, tissues, paths, numbers) goes
through `esc` or one of the helpers here, which escape it; captions are written by the report
itself and may contain markup, with data values inside them escaped by the caller (`esc`).
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from string import Template

import numpy as np
import pandas as pd

CSS = """
:root { --fg: #1d1d1f; --muted: #5f6368; --rule: #d9dce1; --band: #f5f6f8; --accent: #2c6fbb; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 24px 24px 64px; }
header h1 { font-size: 26px; margin: 8px 0 4px; }
header p { color: var(--muted); margin: 0 0 16px; }
nav.toc { background: var(--band); border: 1px solid var(--rule); border-radius: 6px; padding: 10px 18px; }
nav.toc h2 { font-size: 15px; margin: 4px 0; border: 0; padding: 0; }
nav.toc ol { margin: 4px 0; padding-left: 22px; }
nav.toc .na { color: var(--muted); font-size: 13px; }
section { margin-top: 36px; }
h2 { font-size: 21px; border-bottom: 1px solid var(--rule); padding-bottom: 4px; margin: 0 0 12px; }
h3 { font-size: 16px; margin: 22px 0 6px; }
a { color: var(--accent); }
figure { margin: 12px 0 20px; }
figure img { display: block; width: 100%; max-width: 900px; height: auto; }
figcaption, .caption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 900px; }
p.na { color: var(--muted); font-style: italic; }
p.note { color: var(--muted); font-size: 13.5px; }
.table-wrap { overflow-x: auto; max-width: 100%; margin: 6px 0 18px; }
table { border-collapse: collapse; font-size: 13.5px; }
th, td { padding: 3px 10px; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
.nowrap { white-space: nowrap; }
p.caption { margin: 14px 0 2px; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 18px; margin: 6px 0 16px; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.headline { font-size: 16px; }
footer { margin-top: 48px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--rule);
  padding-top: 8px; }
code { font-size: 13px; background: var(--band); padding: 0 3px; border-radius: 3px; }
@media print { nav.toc { display: none; } section { break-inside: avoid-page; } }
"""

PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="nofone $version">
<title>$title</title>
<style>$css</style>
</head>
<body>
<main>
<header>
<h1>$title</h1>
<p>$subtitle</p>
</header>
<nav class="toc" aria-label="Contents">
<h2>Contents</h2>
<ol>
$toc
</ol>
</nav>
$sections
<footer>$footer</footer>
</main>
</body>
</html>
""")


def esc(value: object) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape(str(value), quote=True)


@dataclass
class Section:
    """One report section: its anchor id, title, HTML body and what it contributes elsewhere."""

    id: str
    title: str
    body: list[str] = field(default_factory=list)
    available: bool = True
    notes: list[str] = field(default_factory=list)

    def add(self, *parts: str) -> None:
        self.body.extend(parts)

    def missing(self, message: str) -> None:
        """Record (and show) a part of the section whose inputs are missing."""
        self.notes.append(message)
        self.body.append(not_available(message))

    def unavailable(self, message: str) -> None:
        """The section has nothing to show: say why (and list it as not available)."""
        self.available = False
        self.missing(message)

    def render(self) -> str:
        inner = "\n".join(self.body) if self.body else not_available("nothing to show")
        return f'<section id="{esc(self.id)}">\n<h2>{esc(self.title)}</h2>\n{inner}\n</section>'


def not_available(message: str) -> str:
    """The one line a section shows when its inputs are missing (message is escaped)."""
    return f'<p class="na">not available: {esc(message)}</p>'


def paragraph(text_html: str, css_class: str | None = None) -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return f"<p{cls}>{text_html}</p>"


def subheading(text: str) -> str:
    """A sub-heading within a section (escaped)."""
    return f"<h3>{esc(text)}</h3>"


def code(value: object) -> str:
    """A path, command or file name in code type (escaped)."""
    return f"<code>{esc(value)}</code>"


def strong(text_html: str) -> str:
    return f"<strong>{text_html}</strong>"


def bold(text_html: str) -> str:
    """A panel name in a caption ("<b>Left</b>: ...")."""
    return f"<b>{text_html}</b>"


def emphasis(text_html: str) -> str:
    return f"<em>{text_html}</em>"


def coloured(text_html: str, colour: str) -> str:
    """Text in the colour a figure uses for the same thing."""
    return f'<span style="color:{esc(colour)}">{text_html}</span>'


def table_source(path: str) -> str:
    """The note after a caption that names the TSV holding the whole table."""
    return f'<span class="note">({code(path)})</span>'


def png_figure(png: bytes, caption_html: str, alt: str, width: int = 900) -> str:
    """An embedded PNG (data: URI) with a caption."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}" width="{width}">'
            f"<figcaption>{caption_html}</figcaption></figure>")


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    """A two-column definition list; keys and values are escaped, None shows as a dash."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(format_value(v))}</dd>" for k, v in pairs)
    return f'<dl class="kv">{rows}</dl>'


def format_value(value: object) -> str:
    """Numbers for people: integers with separators, floats to 3-4 significant digits."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        if v == 0:
            return "0"
        if v.is_integer() and abs(v) < 1e15:
            return f"{int(v):,}"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 0.001:
            return f"{v:.4g}"
        return f"{v:.2e}"
    return str(value)


def format_duration(seconds: float | None) -> str | None:
    """Seconds for people: "42 s", "3 min 5 s", "2 h 10 min"; None stays None."""
    if seconds is None:
        return None
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_percent(value: float | None) -> str:
    """A fraction as a whole percentage; a dash for None."""
    return "—" if value is None else f"{100 * float(value):.0f}%"


def table(frame: pd.DataFrame, caption_html: str = "", max_rows: int | None = None,
          numeric: Sequence[str] | None = None, colours: dict[str, str] | None = None,
          colour_column: str | None = None, nowrap: Sequence[str] = ()) -> str:
    """An HTML table of a data frame: every header and cell escaped, numbers right-aligned.

    `colours` maps values of `colour_column` to a swatch drawn before them (group colours);
    cells of the `nowrap` columns are not broken over lines (numbers never are).
    """
    total = len(frame)
    shown = frame if max_rows is None or total <= max_rows else frame.head(max_rows)
    if numeric is None:
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
                   and not pd.api.types.is_bool_dtype(frame[c])]
    numeric = set(numeric)
    head = "".join(f'<th{" class=num" if c in numeric else ""} scope="col">{esc(c)}</th>' for c in frame.columns)
    rows = []
    for record in shown.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(frame.columns, record):
            text = esc(format_value(value))
            if colours and column == colour_column and str(value) in colours:
                text = (f'<span class="nowrap"><span class="swatch" style="background:{esc(colours[str(value)])}">'
                        f"</span>{text}</span>")
            if column in numeric:
                cells.append(f'<td class="num">{text}</td>')
            else:
                cells.append(f'<td class="nowrap">{text}</td>' if column in nowrap else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = ""
    if len(shown) < total:
        note = f'<p class="note">Showing the first {len(shown):,} of {total:,} rows; the TSV has all of them.</p>'
    cap = f'<p class="caption">{caption_html}</p>' if caption_html else ""
    return (f'{cap}<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>{note}')


def page(title: str, subtitle_html: str, sections: list[Section], footer_html: str, version: str) -> str:
    """The whole document; only `sections` bodies and the *_html arguments may contain markup."""
    toc = []
    for section in sections:
        flag = "" if section.available else ' <span class="na">(not available)</span>'
        toc.append(f'<li><a href="#{esc(section.id)}">{esc(section.title)}</a>{flag}</li>')
    return PAGE.substitute(
        title=esc(title), subtitle=subtitle_html, css=CSS, toc="\n".join(toc),
        sections="\n".join(s.render() for s in sections), footer=footer_html, version=esc(version),
    )
