"""A report as a list of blocks, written out as Markdown or as one self-contained HTML page.

The report's content is built once, as blocks (:mod:`._sections`); the two renderers here only
spell them, so ``report.md`` and ``report.html`` say the same thing. Every piece of text from the
record is escaped on the way out: HTML-escaped for the page, backslash-escaped (or put in a code
span) for Markdown, because architecture strings can hold ``<``, ``>``, ``&``, ``|`` or ``*``.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Code", "Heading", "Image", "Inline", "Items", "Para", "Pre", "Table", "Text", "to_html", "to_markdown"]


@dataclass(frozen=True)
class Text:
    """Plain text (``strong``: bold)."""

    text: str
    strong: bool = False


@dataclass(frozen=True)
class Code:
    """Text shown verbatim in a monospace font: architectures, paths, commands."""

    text: str


Inline = Text | Code | str  # a bare str is plain Text


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Para:
    parts: Sequence[Inline]
    note: bool = False  # said in passing: what is missing and why (italic)


@dataclass(frozen=True)
class Items:
    """A bullet list; each item a sequence of inline parts."""

    items: Sequence[Sequence[Inline]]


@dataclass(frozen=True)
class Pre:
    """A block of verbatim text (JSON)."""

    text: str


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Inline]]
    right: frozenset[int] = field(default_factory=frozenset)  # right-aligned (numeric) columns
    strong_rows: frozenset[int] = field(default_factory=frozenset)  # rows to highlight (the winner)


@dataclass(frozen=True)
class Image:
    name: str  # file name under plots/
    alt: str
    png: bytes


Block = Heading | Para | Items | Pre | Table | Image


# ----------------------------------------------------------------------------- Markdown

_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|#~$])")  # GitHub reads $...$ as math
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # intraword _ is literal in CommonMark
_MD_ENTITY = re.compile(r"&(?=#?\w+;)")
_WHITESPACE = re.compile(r"\s+")


def _md_text(text: str) -> str:
    text = _WHITESPACE.sub(" ", text)  # one line: a newline would end a table row
    text = _MD_SPECIAL.sub(r"\\\1", text)
    text = _MD_UNDERSCORE.sub(r"\\_", text)
    return _MD_ENTITY.sub(r"\\&", text)


def _md_code(text: str, *, in_table: bool) -> str:
    text = _WHITESPACE.sub(" ", text)
    if in_table:
        text = text.replace("|", "\\|")  # GFM splits cells on | even inside a code span
    run = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (run + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or run else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_inline(parts: Sequence[Inline] | Inline, *, in_table: bool = False) -> str:
    if isinstance(parts, (str, Text, Code)):
        parts = [parts]
    out = []
    for p in parts:
        if isinstance(p, Code):
            out.append(_md_code(p.text, in_table=in_table))
        else:
            t = p if isinstance(p, Text) else Text(p)
            out.append(f"**{_md_text(t.text)}**" if t.strong and t.text else _md_text(t.text))
    return "".join(out)


def to_markdown(blocks: Sequence[Block], *, plots_dir: str = "plots") -> str:
    """The report as GitHub-flavoured Markdown, plots referenced as ``plots_dir/NAME.png``."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {_md_text(b.text)}")
        elif isinstance(b, Para):
            text = _md_inline(b.parts)
            out.append(f"*{text}*" if b.note else text)
        elif isinstance(b, Items):
            out.append("\n".join(f"- {_md_inline(item)}" for item in b.items))
        elif isinstance(b, Pre):
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", b.text)), default=0) + 1)
            out.append(f"{fence}\n{b.text}\n{fence}")
        elif isinstance(b, Table):
            head = "| " + " | ".join(_md_text(h) for h in b.headers) + " |"
            rule = "|" + "|".join("---:" if i in b.right else "---" for i in range(len(b.headers))) + "|"
            rows = []
            for r, row in enumerate(b.rows):
                cells = [_md_inline(c, in_table=True) for c in row]
                if r in b.strong_rows and cells[0]:
                    cells[0] = f"**{cells[0]}**"
                rows.append("| " + " | ".join(cells) + " |")
            out.append("\n".join([head, rule, *rows]))
        elif isinstance(b, Image):
            out.append(f"![{_md_text(b.alt)}]({plots_dir}/{b.name})")
    return "\n\n".join(out) + "\n"


# ----------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.2em}h2{font-size:1.25em;margin-top:1.6em}
h3{font-size:1.05em}code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88em}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px;overflow-wrap:anywhere}
td code{overflow-wrap:normal;word-break:normal}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;border-radius:4px}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #ccc;padding:.25em .5em;
vertical-align:top}th{background:#f0f0f0;text-align:left}td.num{text-align:right;white-space:nowrap}
tr.winner td{background:#fff6d6;font-weight:600}.note{color:#666;font-style:italic}
img{max-width:100%;height:auto;border:1px solid #eee;margin:.4em 0}figure{margin:1em 0}
figcaption{color:#555;font-size:.9em}.wide{overflow-x:auto}
""".strip()
# Code in a table cell (an architecture, an entry name) wraps at its spaces only, never inside a
# token such as w=[64,64,64,64]: a wide table scrolls (.wide) instead.


_NUM, _WINNER = ' class="num"', ' class="winner"'


def _h(text: str) -> str:
    return html.escape(text, quote=True)


def _html_inline(parts: Sequence[Inline] | Inline) -> str:
    if isinstance(parts, (str, Text, Code)):
        parts = [parts]
    out = []
    for p in parts:
        if isinstance(p, Code):
            out.append(f"<code>{_h(p.text)}</code>")
        else:
            t = p if isinstance(p, Text) else Text(p)
            out.append(f"<strong>{_h(t.text)}</strong>" if t.strong else _h(t.text))
    return "".join(out)


def to_html(blocks: Sequence[Block], *, title: str) -> str:
    """The report as one HTML page: CSS embedded, plots inlined as base64 ``data:`` URIs."""
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_h(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = ' class="note"' if b.note else ""
            body.append(f"<p{cls}>{_html_inline(b.parts)}</p>")
        elif isinstance(b, Items):
            body.append("<ul>\n" + "\n".join(f"<li>{_html_inline(i)}</li>" for i in b.items) + "\n</ul>")
        elif isinstance(b, Pre):
            body.append(f"<pre>{_h(b.text)}</pre>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_h(h)}</th>" for h in b.headers)
            rows = []
            for r, row in enumerate(b.rows):
                cells = "".join(f"<td{_NUM if i in b.right else ''}>{_html_inline(c)}</td>"
                                for i, c in enumerate(row))
                rows.append(f"<tr{_WINNER if r in b.strong_rows else ''}>{cells}</tr>")
            body.append(f'<div class="wide"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
                        + "\n".join(rows) + "\n</tbody>\n</table></div>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            body.append(f'<figure><img alt="{_h(b.alt)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_h(b.alt)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_h(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
