"""The one compilation policy of the engine's Numba kernels, and where their compiled code is cached.

Every kernel module decorates with :data:`kernel` (reference-counted, may allocate) or
:data:`leaf` (allocates nothing: no reference counting, see below), and imports this module
before defining any kernel, so that :class:`KernelCacheLocator` serves their on-disk cache.

Cache policy (Numba's own locators key a file's cache on that file's mtime and size only):

* the source stamp of a kernel is a SHA-256 of the text of its module and of every kernel module
  that module imports, transitively (:func:`source_stamp`), so editing a kernel that a kernel in
  another module calls invalidates the dependent cache too, and a checkout's file times do not
  matter;
* the cache lives in a user cache directory, not beside the sources, so it works when
  site-packages is read-only: ``$NEXTSTAT_CACHE_DIR``, else ``$NUMBA_CACHE_DIR``, else
  ``$XDG_CACHE_HOME/nextstat`` (``~/.cache/nextstat``); :func:`cache_dir` tells which.

The first call of an entry point on an empty cache compiles it (tens of seconds) and says so on
one line of standard error, once per process (:func:`announce_compiling`); ``nextstat warmup`` compiles
everything ahead of time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from numba import njit
from numba.core import caching, entrypoints, event
from numba.core.compiler_lock import global_compiler_lock

__all__ = ["kernel", "leaf", "cache_dir", "kernel_sources", "source_stamp", "KernelCacheLocator", "is_cached"]

logger = logging.getLogger("nextstat")

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: a module holding kernels imports this module's decorators
_MARKER = re.compile(r"^from nextstat\.engine\.jit import [^\n]*\b(kernel|leaf)\b", re.M)

@contextmanager
def _extensions_deferred() -> Iterator[None]:
    """Numba loads every installed ``numba_extensions`` entry point (awkward's: 0.2-0.3 s of
    imports) before its first compile or cache load in a process. The engine's kernels use no
    extension types, so their first call does not wait for that: the loading is left to the
    next compile that is not ours (the flag is restored), so user code sees its extensions. The
    window holds Numba's compiler lock, inside which every compile pipeline checks the flag again
    (``targetctx.refresh()``): a compile in another thread sees the restored flag."""
    if entrypoints._already_initialized:
        yield
        return
    with global_compiler_lock:
        entrypoints._already_initialized = True
        try:
            yield
        finally:
            entrypoints._already_initialized = False


def _deferring(decorator):
    """``decorator`` (an ``njit(...)``) whose dispatchers compile or load their code (the first
    call of each signature: ``Dispatcher._compile_for_args``) under :func:`_extensions_deferred`;
    the calls after it do not pass here."""
    def decorate(py_func):
        dispatcher = decorator(py_func)
        first_call = dispatcher._compile_for_args

        def compile_for_args(*args, **kws):
            with _extensions_deferred():
                return first_call(*args, **kws)

        dispatcher._compile_for_args = compile_for_args
        return dispatcher

    return decorate


kernel = _deferring(njit(cache=True, nogil=True, error_model="numpy"))
"""Decorator of an engine kernel: cached, releases the GIL, NumPy's error model (no exceptions
on division by zero)."""

# kernels that allocate nothing run without reference counting: with it, each call of a kernel
# taking the model's ~25 arrays made ~60 atomic refcount updates, most of a small model's pass
leaf = _deferring(njit(cache=True, nogil=True, error_model="numpy", _nrt=False))
"""Decorator of a kernel that allocates nothing (no NRT reference counting)."""


def cache_dir() -> Path:
    """Root directory of the compiled-kernel cache (see the module docstring)."""
    for var in ("NEXTSTAT_CACHE_DIR", "NUMBA_CACHE_DIR"):
        value = os.environ.get(var)
        if value:
            return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nextstat"


@cache
def kernel_sources() -> tuple[Path, ...]:
    """The package's modules that hold kernels (those importing :data:`kernel` or :data:`leaf`), sorted."""
    found = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        try:
            if _MARKER.search(path.read_text(encoding="utf-8")):
                found.append(path.resolve())
        except OSError:  # pragma: no cover - unreadable file: not a kernel module
            continue
    return tuple(found)


def _module_file(name: str) -> Path | None:
    """Source file of the package module ``name`` (``nextstat.engine.numba_core``), if any."""
    parts = name.split(".")
    if parts[0] != "nextstat":
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


# import statements, found in the text (a regex, not ``ast``: parsing and walking the kernel
# modules took 0.1-0.2 s of every process's first import); comments are dropped first
_COMMENT = re.compile(r"#[^\n]*")
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n;]*)|import[ \t]+([^\n;]+))",
                     re.M)


def imported_names(text: str, package: str) -> set[str]:
    """Names that the Python source ``text`` of a module in ``package`` imports: ``a.b`` for
    ``import a.b as c``, ``a`` and ``a.x`` for ``from a import x`` (relative imports resolved).
    A superset where such text sits in a string (harmless: a stamp then covers one more file)."""
    text = _COMMENT.sub("", text).replace("\\\n", " ")
    names: set[str] = set()
    for dots, module, listed, plain in _IMPORT.findall(text):
        if plain:
            names.update(part.split()[0] for part in plain.split(",") if part.strip())
            continue
        base = module
        if dots:
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - len(dots) + 1] + ([module] if module else []))
        names.add(base)
        names.update(f"{base}.{part.split()[0]}" for part in listed.strip().strip("()").split(",") if part.strip())
    return names


@cache
def _kernel_imports(path: Path) -> tuple[Path, ...]:
    """Kernel modules, and the engine's modules that gather kernels' names (``numba_core``), that
    the module at ``path`` imports directly (``import``/``from`` lines)."""
    kernels = set(kernel_sources()) | {p.resolve() for p in (PACKAGE_DIR / "engine").glob("*.py")}
    package = ".".join(("nextstat", *path.relative_to(PACKAGE_DIR).parent.parts))
    found = set()
    for name in imported_names(path.read_text(encoding="utf-8"), package):
        file = _module_file(name)
        if file is not None and file in kernels and file != path:
            found.add(file)
    return tuple(sorted(found))


@cache
def source_stamp(path: Path) -> str:
    """SHA-256 over the text of the kernel module at ``path``, of every kernel module it imports
    (transitively: editing a callee's module invalidates the caller's cache) and of this module."""
    seen: set[Path] = set()
    todo = [Path(path).resolve(), Path(__file__).resolve()]  # the decorators' options count too
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo.extend(_kernel_imports(file))
    digest = hashlib.sha256()
    for file in sorted(seen):
        digest.update(file.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def is_cached(dispatcher) -> bool:
    """Whether the compiled cache holds code of ``dispatcher`` for the current sources (a hint:
    it reads the cache's index, as Numba does before loading; ``False`` when that cannot be told)."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())
    except Exception:  # pragma: no cover - Numba internals moved: assume it must compile
        return False


class KernelCacheLocator(caching._CacheLocator):
    """Numba cache locator for the package's kernels: content-hash stamp, user cache directory."""

    def __init__(self, py_func, py_file: str):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        relative = Path(py_file).resolve().relative_to(PACKAGE_DIR)
        self._cache_path = str(cache_dir() / "kernels" / relative.parent / relative.stem)

    def get_cache_path(self) -> str:
        return self._cache_path

    def get_source_stamp(self) -> str:
        return source_stamp(Path(self._py_file).resolve())

    def get_disambiguator(self) -> str:
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file: str):
        try:
            Path(py_file).resolve().relative_to(PACKAGE_DIR)
        except ValueError:
            return None  # not ours: Numba's own locators decide
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            logger.warning("compiled-kernel cache %s is not writable; kernels compile in every process "
                           "(set NEXTSTAT_CACHE_DIR to a writable directory)", self._cache_path)
            return None
        return self


if KernelCacheLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, KernelCacheLocator)


class _CompileNotice(event.Listener):
    """Says once per process, on one line, that the engine is compiling (an empty cache)."""

    def __init__(self) -> None:
        self.announced = False
        self.depth = 0
        self.started = 0.0

    def on_start(self, ev: event.Event) -> None:
        dispatcher = ev.data["dispatcher"]
        if not getattr(dispatcher.py_func, "__module__", "").startswith("nextstat."):
            return
        self.depth += 1
        if self.depth == 1:
            self.started = time.perf_counter()
            if not self.announced:
                announce_compiling(dispatcher.py_func.__name__)

    def on_end(self, ev: event.Event) -> None:
        dispatcher = ev.data["dispatcher"]
        if not getattr(dispatcher.py_func, "__module__", "").startswith("nextstat."):
            return
        self.depth -= 1
        if self.depth == 0:
            logger.info("compiled %s in %.1f s (cached in %s)", dispatcher.py_func.__name__,
                        time.perf_counter() - self.started, cache_dir())


#: rough single-core compile time of the engine on a first fit, hypotest or loss step (seconds)
COMPILE_ESTIMATE_S = 60


def announce_compiling(name: str, line: str | None = None) -> None:
    """Say once per process, on standard error, that the engine compiles (``line``, or the default
    line of a first compile); ``name`` (the first kernel) goes to the log only.
    ``NEXTSTAT_QUIET_COMPILE`` silences it."""
    _NOTICE.announced = True
    if os.environ.get("NEXTSTAT_QUIET_COMPILE"):
        return
    line = line or (f"nextstat: compiling the engine, once (~{COMPILE_ESTIMATE_S} s per entry point, cached "
                    f"in {cache_dir()}; `nextstat warmup` compiles everything ahead)")
    logger.info("%s [first kernel: %s]", line, name)
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # pragma: no cover - closed stderr
        pass


_NOTICE = _CompileNotice()
event.register("numba:compile", _NOTICE)
