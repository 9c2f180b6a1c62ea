"""A self-contained report folder: PNG figures and CSV tables beside one offline page.

Sections are built from plain blocks (paragraphs, notes, figures, tables, titled groups) and rendered by
the Jinja2 templates in ``templates/`` (``page.html``); the page links only to files of its own folder and
loads no script, font or style from the network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure as PlotFigure

from gridsearch.vocabulary import format_value, tidy_float

MAX_TABLE_ROWS = 100
"""Rows a table with a CSV shows on the page; the CSV has them all."""
Format = Callable[[Any], str]
"""How the cells of one table column are written."""
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gridsearch.analysis", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: ClassVar[str] = "paragraph"


@dataclass(frozen=True)
class Note:
    """A remark in small grey type: what a table counts, what is missing and how to supply it."""

    text: str
    kind: ClassVar[str] = "note"


@dataclass(frozen=True)
class Figure:
    """A PNG of the folder and its caption."""

    src: str
    caption: str
    kind: ClassVar[str] = "figure"


@dataclass(frozen=True)
class Download:
    """A link to a file of the folder, e.g. a CSV."""

    label: str
    filename: str
    kind: ClassVar[str] = "download"


@dataclass(frozen=True)
class Link:
    """A page of the folder, what it holds, in a :class:`Links` list."""

    href: str
    label: str
    description: str = ""


@dataclass(frozen=True)
class Links:
    """A list of links to other pages of the folder (the per-sweep pages)."""

    links: list[Link]
    kind: ClassVar[str] = "links"


@dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool
    """Right-aligned, in tabular figures."""


@dataclass(frozen=True)
class Table:
    """A table as shown (cells already formatted), with the file name of its raw CSV."""

    columns: list[str]
    rows: list[list[Cell]]
    csv: str | None
    total: int
    """Rows of the whole table: more than ``rows`` when only the first are shown."""
    kind: ClassVar[str] = "table"


@dataclass(frozen=True)
class Group:
    """Blocks under a sub-heading."""

    title: str
    blocks: Sequence[Block]
    kind: ClassVar[str] = "group"


Block = Paragraph | Note | Figure | Download | Links | Table | Group


@dataclass(frozen=True)
class Section:
    """A numbered part of the page, with its anchor for the navigation links."""

    anchor: str
    title: str
    blocks: Sequence[Block]


class Folder:
    """The output folder: each figure and table is saved here and referred to by its file name."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def png(self, figure: PlotFigure, name: str) -> str:
        """Save ``figure`` as ``name``.png (then close it); returns the file name."""
        filename = f"{name}.png"
        figure.savefig(self.path / filename, dpi=110, bbox_inches="tight")
        plt.close(figure)
        return filename

    def csv(self, table: pd.DataFrame, name: str) -> str:
        """Save ``table`` as ``name``.csv (raw values: fractions, seconds; see ``tidy_float``); its file name."""
        filename = f"{name}.csv"
        floats = table.select_dtypes("float").columns
        table.assign(**{column: table[column].map(tidy_float) for column in floats}).to_csv(
            self.path / filename, index=False
        )
        return filename

    def page(
        self, title: str, sections: Sequence[Section], filename: str = "index.html", up: str | None = None
    ) -> Path:
        """Render ``sections`` into the page ``filename`` (with a link back to the page ``up``); its path."""
        path = self.path / filename
        html = TEMPLATES.get_template("page.html").render(title=title, sections=sections, up=up)
        path.write_text(html, encoding="utf-8")
        return path


def table(frame: pd.DataFrame, csv: str | None = None, formats: Mapping[str, Format] | None = None) -> Table:
    """``frame`` as shown: cells written by ``formats`` per column (else as params are written; missing values empty),
    numbers right-aligned, headers with spaces for underscores; ``csv`` is the file of its raw values, and with
    one the page shows only the first ``MAX_TABLE_ROWS`` rows."""
    formats = formats or {}
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns
    ]
    writers = [formats.get(column, format_value) for column in frame.columns]
    rows = [
        [
            Cell("" if pd.api.types.is_scalar(value) and pd.isna(value) else write(value), number)
            for value, write, number in zip(row, writers, numeric)
        ]
        for row in (frame.head(MAX_TABLE_ROWS) if csv else frame).itertuples(index=False)
    ]
    return Table([format_value(c).replace("_", " ") for c in frame.columns], rows, csv, len(frame))


def seconds(value: float) -> str:
    """A duration in seconds, rounded to a tenth: ``1,234.5 s``."""
    return f"{float(value):,.1f} s"
