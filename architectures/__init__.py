"""Registry of the network architectures a sweep can name.

An architecture is a name mapped to a module builder (usually the ``nn.Module`` class itself).
The builder's keyword parameters, with their type annotations and defaults, are the sweep params
the architecture accepts; ``gridsearch.spec`` validates sweep files against them. An architecture may
also switch on trainer-side extras, named here by plain strings (``AUGMENTATION``, ``TRANSFORMER``):
``gridsearch.spec`` maps each to its sweep params. This package imports nothing from ``gridsearch``.

Reading the registry does not import torch: each module's top-level ``register(...)`` calls and its builder's
signature are read from its source (``ast``), and the module itself is imported when a network is first built
(``Architecture.build``). So ``register`` there takes literal strings and the builder by name, and the
builder's defaults are literals.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

AUGMENTATION = "augmentation"
"""Extra: the trainer's batched random distortions of the training images (their params: ``aug_p``, ...)."""
TRANSFORMER = "transformer"
"""Extra: a spatial transformer's localisation net learns at ``lr * transformer_lr_scale``; the module
defines ``transformer_parameters()``."""
EXTRAS = frozenset({AUGMENTATION, TRANSFORMER})
"""Every trainer-side extra an architecture may name in ``training_params``."""
DATA_PARAMS = ("image_shape", "classes")
"""Builder parameters that are not sweep params: the engine fills them from the dataset (one image's shape as
channels, height, width; the number of classes), so that one architecture fits any dataset."""


@dataclass(frozen=True)
class Architecture:
    """One registry entry: the builder's module, name and keyword parameters, and the training extras it uses."""

    name: str
    module: str
    """The module whose ``register`` call made the entry; imported when the network is first built."""
    builder: str
    """The builder's name in ``module``."""
    description: str
    signature: tuple[inspect.Parameter, ...]
    """The builder's keyword parameters (annotation, default), as its source declares them."""
    training_params: frozenset[str] = frozenset()
    """The trainer-side extras this architecture switches on (a subset of ``EXTRAS``)."""

    @property
    def build(self) -> Callable[..., nn.Module]:
        """The builder, its module imported on first use (with torch)."""
        if self.name not in _BUILDERS:
            module = importlib.import_module(self.module)  # a built-in's register() call fills in the builder
            _BUILDERS.setdefault(self.name, getattr(module, self.builder))
        return _BUILDERS[self.name]

    def params(self) -> dict[str, inspect.Parameter]:
        """The builder's keyword parameters that a sweep sets: name -> ``inspect.Parameter`` (annotation, default)."""
        return {p.name: p for p in self.signature if p.name not in DATA_PARAMS}

    def data_params(self, image_shape: tuple[int, int, int], classes: int) -> dict[str, Any]:
        """The ``DATA_PARAMS`` the builder names, for a dataset of ``classes`` classes of ``image_shape`` images."""
        given = {"image_shape": tuple(image_shape), "classes": classes}
        return {p.name: given[p.name] for p in self.signature if p.name in DATA_PARAMS}

    def defaults(self) -> dict[str, Any]:
        """Default values of the builder's parameters."""
        return {name: p.default for name, p in self.params().items() if p.default is not p.empty}


REGISTRY: dict[str, Architecture] = {}
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
"""Each registered builder, once its module is imported."""


def register(
    name: str,
    build: Callable[..., nn.Module],
    description: str,
    training_params: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Add an architecture to the registry under ``name``, with the ``EXTRAS`` it switches on; for an entry
    this package declared from its source, attach the builder as its module is imported."""
    unknown = set(training_params) - EXTRAS
    if unknown:
        raise ValueError(f"architecture {name!r}: unknown training_params {sorted(unknown)} (known: {sorted(EXTRAS)})")
    signature = keyword_params(inspect.signature(build))
    declared = REGISTRY.get(name)
    if declared is not None:
        if name in _BUILDERS or declared.builder != build.__name__:
            raise ValueError(f"architecture {name!r} is registered twice")
        if [describe(p) for p in signature] != [describe(p) for p in declared.signature]:
            raise ValueError(f"architecture {name!r}: the signature of {build.__name__} differs from its source")
    else:
        REGISTRY[name] = Architecture(
            name, build.__module__, build.__name__, description, signature, frozenset(training_params)
        )
    _BUILDERS[name] = build


def get(name: str) -> Architecture:
    """The registered architecture called ``name``, or the user's builder ``name`` references
    (``package.module:builder``, declared on first use from its source); ``KeyError`` if there is none."""
    if name not in REGISTRY and is_reference(name):
        REGISTRY[name] = _declare_reference(name)
    return REGISTRY[name]


def is_reference(name: str) -> bool:
    """Whether ``name`` is a reference to the user's own builder, ``package.module:builder``."""
    module, _, builder = name.partition(":")
    return bool(builder) and builder.isidentifier() and all(part.isidentifier() for part in module.split("."))


def _declare_reference(name: str) -> Architecture:
    """The entry of the user's builder ``name`` (``package.module:builder``): its signature read from the module's
    source without importing it (its parent packages are), or from the imported module if the builder is not
    defined in that source; ``ValueError`` saying what is missing or wrong."""
    module, _, builder = name.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except Exception as exc:  # a missing or raising parent package
        raise ValueError(f"cannot find module {module!r} ({type(exc).__name__}: {exc})") from None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        raise ValueError(f"no module {module!r} on the import path (the sweep file's folder first)")
    source = Path(spec.origin)
    try:
        signature = _signature_in(ast.parse(source.read_text(), filename=str(source)), builder)
    except LookupError:
        signature = _imported_signature(module, builder)
    except (SyntaxError, ValueError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{builder}: its parameters' defaults must be literals ({why})") from None
    for parameter in signature:
        if (
            parameter.name not in DATA_PARAMS
            and parameter.annotation not in _TYPES
            and (parameter.default is parameter.empty or parameter.annotation is not parameter.empty)
        ):
            raise ValueError(
                f"{builder}({parameter.name}): each keyword parameter needs a literal default or an int, float, bool "
                "or str annotation"
            )
    signature = tuple(
        p.replace(annotation=type(p.default).__name__) if p.annotation is p.empty else p for p in signature
    )
    return Architecture(name, module, builder, f"{builder} from {source}", signature)


_TYPES = ("int", "float", "bool", "str")
"""The annotations (as written) a user's builder parameter may have."""


def _imported_signature(module: str, builder: str) -> tuple[inspect.Parameter, ...]:
    """The keyword parameters of ``builder`` in ``module`` once imported (it was defined elsewhere)."""
    try:
        found = getattr(importlib.import_module(module), builder)
    except AttributeError:
        raise ValueError(f"module {module!r} defines no {builder!r}") from None
    except Exception as exc:
        raise ValueError(f"importing {module!r} raised {type(exc).__name__}: {exc}") from None
    if not callable(found):
        raise ValueError(f"{module}:{builder} is not a class or function")
    parameters = keyword_params(inspect.signature(found))
    return tuple(
        p.replace(
            annotation=getattr(p.annotation, "__name__", p.annotation) if p.annotation is not p.empty else p.empty
        )
        for p in parameters
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def keyword_params(signature: inspect.Signature) -> tuple[inspect.Parameter, ...]:
    """The parameters of ``signature`` a sweep can set by keyword."""
    return tuple(
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
    )


def describe(parameter: inspect.Parameter) -> tuple[str, str, Any]:
    """A parameter's name, annotation (as written) and default, to compare a source's with a builder's."""
    annotation = parameter.annotation
    return parameter.name, getattr(annotation, "__name__", str(annotation)), parameter.default


def _source(module: str) -> ast.Module:
    return ast.parse(Path(__path__[0], f"{module}.py").read_text(), filename=f"{module}.py")


def _signature(module: str, builder: str) -> tuple[inspect.Parameter, ...]:
    """The keyword parameters of ``builder`` (a class or function defined in, or imported from this package
    into, ``module``), read from the source."""
    tree = _source(module)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(f"{__name__}."):
            origins = [alias.name for alias in node.names if (alias.asname or alias.name) == builder]
            if origins:
                return _signature(node.module.removeprefix(f"{__name__}."), origins[0])
    try:
        return _signature_in(tree, builder)
    except LookupError:
        raise ValueError(f"{__name__}.{module}: no class or function {builder!r} in its source") from None


def _signature_in(tree: ast.Module, builder: str) -> tuple[inspect.Parameter, ...]:
    """The keyword parameters of the class or function ``builder`` defined at the top of ``tree``
    (``LookupError`` if it defines none)."""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == builder:
            init = [f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
            return _arguments(init[0].args) if init else ()
        if isinstance(node, ast.FunctionDef) and node.name == builder:
            return _arguments(node.args)
    raise LookupError(builder)


def _arguments(arguments: ast.arguments) -> tuple[inspect.Parameter, ...]:
    """The keyword parameters of a ``def``'s ``arguments``: annotations as written, defaults as literals."""
    positional = arguments.posonlyargs + arguments.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    kinds: list[Any] = [inspect.Parameter.POSITIONAL_ONLY] * len(arguments.posonlyargs)
    kinds += [inspect.Parameter.POSITIONAL_OR_KEYWORD] * len(arguments.args)
    every = list(zip(positional, defaults, kinds))
    every += [(a, d, inspect.Parameter.KEYWORD_ONLY) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults)]
    return keyword_params(
        inspect.Signature(
            [
                inspect.Parameter(
                    arg.arg,
                    kind,
                    default=inspect.Parameter.empty if default is None else ast.literal_eval(default),
                    annotation=inspect.Parameter.empty if arg.annotation is None else ast.unparse(arg.annotation),
                )
                for arg, default, kind in every
            ]
        )
    )


def _declare(module: str) -> None:
    """Add the architectures ``module`` registers to the registry, from its source (without importing it)."""
    names = {"AUGMENTATION": AUGMENTATION, "TRANSFORMER": TRANSFORMER}
    for node in _source(module).body:
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "register"):
            continue
        try:
            bound = inspect.signature(register).bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
            name, build, description = (bound.arguments[k] for k in ("name", "build", "description"))
            extras = bound.arguments.get("training_params", ast.Set([]))
            assert isinstance(build, ast.Name) and isinstance(extras, (ast.Set, ast.List, ast.Tuple))
            training = frozenset(names[e.id] if isinstance(e, ast.Name) else ast.literal_eval(e) for e in extras.elts)
            entry = Architecture(
                ast.literal_eval(name),
                f"{__name__}.{module}",
                build.id,
                ast.literal_eval(description),
                _signature(module, build.id),
                training,
            )
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{__name__}/{module}.py:{node.lineno}: register() must take literal strings, the builder by name "
                f"and a set of EXTRAS, with literal defaults in the builder ({type(exc).__name__}: {exc})"
            ) from None
        if entry.name in REGISTRY:
            raise ValueError(f"architecture {entry.name!r} is registered twice")
        unknown = entry.training_params - EXTRAS
        if unknown:
            raise ValueError(f"architecture {entry.name!r}: unknown training_params {sorted(unknown)}")
        REGISTRY[entry.name] = entry


def _declare_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            _declare(module.name)


_declare_all()
