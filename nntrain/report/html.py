"""The report as one self-contained HTML page: inline CSS, images as base64 data URIs, no script,
no external URL, so it can be mailed or attached to a pull request and read offline."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; font-style: italic; }
nav a { margin-right: 1em; }
"""


@dataclass
class Section:
    """One titled part of the page; `parts` are HTML fragments made by the helpers below."""

    anchor: str
    title: str
    parts: list[str] = field(default_factory=list)


def text(value: Any) -> str:
    return html.escape(str(value))


def paragraph(content: str, note: bool = False) -> str:
    return f'<p class="note">{text(content)}</p>' if note else f"<p>{text(content)}</p>"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], caption: str | None = None,
          left: int | Sequence[int] = 1, css: str = "") -> str:
    """A table; columns in `left` (the first `left` ones if a number) are left-aligned (names,
    texts), the others right-aligned (numbers)."""
    lefts = set(range(left)) if isinstance(left, int) else set(left)
    cls = lambda i: ' class="l"' if i in lefts else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{text(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(i)}>{text(v)}</td>" for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    cap = f"<caption>{text(caption)}</caption>" if caption else ""
    klass = f' class="{css}"' if css else ""
    return f"<table{klass}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(png: bytes, alt: str, caption: str = "") -> str:
    """An image embedded as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    cap = f"<figcaption>{text(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{text(alt)}">{cap}</figure>'


def preformatted(content: str) -> str:
    return f"<pre>{text(content)}</pre>"


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document."""
    nav = " ".join(f'<a href="#{s.anchor}">{text(s.title)}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}"><h2>{text(s.title)}</h2>\n' + "\n".join(s.parts) + "</section>" for s in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{text(title)}</h1>\n<p>{text(subtitle)}</p>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )
