"""The start-up check of the commands that train or load networks: torch and torchvision builds that do not
match (``operator torchvision::nms does not exist``) become one ``error:`` line naming both versions and the
matching pair to install, instead of a traceback from deep inside a run."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gridsearch.errors import UserError

TORCH_COMMANDS = frozenset({"run", "evaluate", "inspect", "export"})
"""The commands that import torchvision (``plan``, ``status`` and the other readers never do)."""

TORCHVISION_OFFSET = 15
"""torchvision 0.(N+15) is built for torch 2.N (0.16 for 2.1, ..., 0.28 for 2.13)."""


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def matching_pair(torch_version: str) -> str:
    """The ``pip install`` command that pairs ``torch_version`` with the torchvision built for it."""
    base, _, local = torch_version.partition("+")
    major, minor = (int(part) for part in base.split(".")[:2])
    command = f"pip install torch=={base} torchvision==0.{minor + TORCHVISION_OFFSET}"
    if major != 2:
        command = "pip install --upgrade torch torchvision"
    if local == "cpu":
        command += " --index-url https://download.pytorch.org/whl/cpu"
    return command


def check_torchvision() -> None:
    """Import torchvision (and so torch); a build mismatch raises :class:`UserError` with the fix."""
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError, OSError) as exc:
        torch_version, vision_version = _installed("torch"), _installed("torchvision")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = matching_pair(torch_version) if torch_version[:1].isdigit() else "pip install torch torchvision"
        raise UserError(
            f"torchvision {vision_version} does not load with torch {torch_version} ({first}): "
            f"install a matching pair: {fix}"
        ) from None
