"""Code of the user's own, named in a sweep file as ``package.module:name`` (a model, a data loader).

A reference is imported as Python imports a script's neighbours: with the sweep file's folder first on the
import path (``code_path``), so a package beside the sweep file just works, and an installed package too. Its
``digest`` hashes the module's source, so that a trial's key changes with the code it trains.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gridsearch.errors import UserError

_REFERENCE = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<name>[A-Za-z_]\w*)$")


@dataclass(frozen=True)
class CodeRef:
    """``module:name``: an object (class, function) defined in an importable module."""

    module: str
    name: str

    @classmethod
    def parse(cls, text: str) -> CodeRef | None:
        """The reference ``text`` writes, or None if it is not of the form ``package.module:name``."""
        match = _REFERENCE.match(text)
        return cls(match["module"], match["name"]) if match else None

    def __str__(self) -> str:
        return f"{self.module}:{self.name}"

    def source_file(self) -> Path:
        """The module's source file, found without executing the module itself (its parent packages are
        imported); :class:`UserError` if there is none."""
        try:
            spec = importlib.util.find_spec(self.module)
        except (ImportError, ValueError) as exc:
            raise UserError(f"{self}: cannot find module {self.module!r} ({type(exc).__name__}: {exc})") from None
        except Exception as exc:  # a parent package that raises on import
            raise UserError(f"{self}: importing {self.module!r} raised {type(exc).__name__}: {exc}") from None
        if spec is None or spec.origin is None or not Path(spec.origin).is_file():
            raise UserError(f"{self}: no module {self.module!r} on the import path (the sweep file's folder first)")
        return Path(spec.origin)

    def digest(self) -> str:
        """The SHA-256 of the module's source: what a trial's key records of this code."""
        return hashlib.sha256(self.source_file().read_bytes()).hexdigest()

    def load(self) -> object:
        """The object itself, its module imported; :class:`UserError` naming what failed."""
        try:
            module = importlib.import_module(self.module)
        except Exception as exc:
            raise UserError(f"{self}: importing {self.module!r} raised {type(exc).__name__}: {exc}") from None
        if not hasattr(module, self.name):
            raise UserError(f"{self}: module {self.module!r} defines no {self.name!r}")
        return getattr(module, self.name)


def code_path(folders: Iterable[str | Path]) -> None:
    """Put ``folders`` first on this process's import path (once each), as a worker does before it builds a
    trial's model or reads its data."""
    for folder in reversed([str(Path(f).resolve()) for f in folders]):
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
    importlib.invalidate_caches()
