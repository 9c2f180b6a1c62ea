"""A self-contained report folder: PNG figures and CSV tables written beside one offline ``index.html``.

Only relative links; no scripts, fonts or styles from the network.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2.2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.9em; } nav a { margin-right: 1em; }
"""


class Folder:
    """The output folder: each figure and table is saved here and referred to by its file name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def png(self, figure: plt.Figure, name: str) -> str:
        """Save ``figure`` as ``name``.png (then close it); returns the file name."""
        filename = f"{name}.png"
        figure.savefig(self.path / filename, dpi=110, bbox_inches="tight")
        plt.close(figure)
        return filename

    def csv(self, table: pd.DataFrame, name: str) -> str:
        """Save ``table`` as ``name``.csv (raw values: fractions, seconds); returns the file name."""
        filename = f"{name}.csv"
        table.to_csv(self.path / filename, index=False)
        return filename

    def page(self, title: str, body: str, filename: str = "index.html") -> Path:
        """Write the HTML page ``filename`` around ``body``."""
        path = self.path / filename
        path.write_text(
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n",
            encoding="utf-8",
        )
        return path


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{html.escape(title)}</h2>\n' + "\n".join(parts) + "</section>\n"


def subsection(title: str, *parts: str) -> str:
    return f"<h3>{html.escape(title)}</h3>\n" + "\n".join(parts)


def paragraph(text: str) -> str:
    return f"<p>{html.escape(text)}</p>"


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def navigation(anchors: Mapping[str, str]) -> str:
    """Links to the sections: anchor -> title."""
    return "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t in anchors.items()) + "</nav>"


def figure(filename: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(filename)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def table(
    frame: pd.DataFrame, csv: str | None = None, formats: Mapping[str, Callable[[object], str]] | None = None
) -> str:
    """``frame`` as an HTML table (cells formatted by ``formats`` per column, numbers right-aligned),
    with a link to its CSV."""
    formats = formats or {}
    numeric = {
        c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    }

    def cell(column: str, value: object) -> str:
        text = "" if pd.isna(value) else formats[column](value) if column in formats else str(value)
        return f'<td class="num">{html.escape(text)}</td>' if column in numeric else f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(str(c).replace('_', ' '))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(cell(c, v) for c, v in zip(frame.columns, row)) + "</tr>\n"
        for row in frame.itertuples(index=False)
    )
    link = download("Table as CSV", csv) if csv else ""
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table></div>{link}'


def download(label: str, filename: str) -> str:
    """A note linking to a file of the folder, e.g. a CSV."""
    return f'<p class="note">{html.escape(label)}: <a href="{html.escape(filename)}">{html.escape(filename)}</a></p>'


def percent(value: object) -> str:
    """A fraction as a percentage with two decimals (0.99123 -> "99.12%")."""
    return f"{float(value):.2%}"


def seconds(value: object) -> str:
    """A duration in seconds, rounded to a tenth."""
    return f"{float(value):,.1f} s"
