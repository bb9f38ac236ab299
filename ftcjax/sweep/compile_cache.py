"""The user-level persistent XLA compilation cache: where it lives, and that it is safe to use.

A sweep's kernels take most of a short run's time to compile, and a compiled program depends only
on shapes, dtypes and the jax/jaxlib build, not on the run directory. So the cache lives per user
(a second sweep into a NEW directory with the same shapes compiles nothing):

    $FTCJAX_COMPILATION_CACHE                     (a directory, or "off"), else
    $XDG_CACHE_HOME/ftcjax, else ~/.cache/ftcjax
        /jax-<jax version>-jaxlib-<jaxlib version>/   <- the directory jax is given
            ftcjax-executables/                       <- training segments compiled once, loaded
                                                         onto every device (ftcjax._src.executables)

The version subdirectory keeps different jax builds apart (jax's own cache key also covers the
backend, device kind, XLA flags and compile options, so CPU and GPU runs may share it). The
executables in a cache are loaded and run later, so a cache directory must be the user's own:
created 0700, and refused with a one-line error when it (or a directory above it) is owned by
someone else or writable by group/others (a sticky directory such as /tmp may be above it).
The directory used is recorded in every run's manifest (``environment.compilation_cache_dir``).
``ftcjax-executables/`` keeps its least recently used programs within a bound (1 GiB, or jax's
``jax_compilation_cache_max_size`` when set); jax's own entries are jax's to bound (unbounded by
default; its eviction needs the ``filelock`` package). ``ftcjax cache`` shows what the cache holds
per jax version (:func:`cache_usage`) and ``ftcjax cache --clear`` empties it (:func:`clear_cache`).
"""
from __future__ import annotations

import os
import re
import shutil
import stat
from importlib import metadata
from pathlib import Path
from typing import Mapping, Optional

from ftcjax._src.errors import FTCInputError

__all__ = ["ENV_VAR", "OFF", "cache_root", "versioned_cache_dir", "check_private_dir",
           "ensure_private_dir", "configure_compilation_cache", "cache_usage", "clear_cache"]

ENV_VAR = "FTCJAX_COMPILATION_CACHE"
OFF = ("off", "none", "")


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # e.g. a source checkout of jax: ask the module
        mod = __import__(dist)
        return str(getattr(mod, "__version__", "unknown"))


def version_key() -> str:
    """``jax-<version>-jaxlib-<version>``: the subdirectory that keeps jax builds apart."""
    return f"jax-{_version('jax')}-jaxlib-{_version('jaxlib')}"


def cache_root(option: Optional[str] = None, *, environ: Optional[Mapping[str, str]] = None
               ) -> Optional[Path]:
    """The cache root chosen by ``option`` (the CLI's ``--compilation-cache``), else the
    environment, else the XDG default; None when turned off ("off", "none" or "")."""
    env = os.environ if environ is None else environ
    choice = option if option is not None else env.get(ENV_VAR)
    if choice is not None:
        if choice.strip().lower() in OFF:
            return None
        return Path(choice).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "")
    # the XDG spec: a relative XDG_CACHE_HOME is invalid and must be ignored
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path(env.get("HOME") or Path.home()) / ".cache"
    return base / "ftcjax"


def versioned_cache_dir(option: Optional[str] = None, *,
                        environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """``cache_root(...) / version_key()``, or None when the cache is off."""
    root = cache_root(option, environ=environ)
    return None if root is None else root / version_key()


def _describe(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"


def check_private_dir(path: Path, *, label: str = "compilation cache") -> None:
    """Raise FTCInputError unless ``path`` is a directory owned by this user that nobody else can
    write, below directories that are owned by this user or root and not writable by others
    (sticky directories excepted: others cannot rename or delete what is ours in them)."""
    path = Path(path)
    uid = os.geteuid()
    try:
        st = os.stat(path)
    except OSError as e:
        raise FTCInputError(f"{label} {path}: cannot use it ({e.strerror})") from None
    if not stat.S_ISDIR(st.st_mode):
        raise FTCInputError(f"{label} {path}: not a directory")
    if st.st_uid != uid:
        raise FTCInputError(
            f"{label} {path}: owned by someone else (uid {st.st_uid}, you are {uid}); compiled "
            "programs in it would be loaded and run: use a directory of your own or 'off'")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise FTCInputError(
            f"{label} {path}: writable by group/others ({_describe(st)}); compiled programs in it "
            f"would be loaded and run: chmod go-w '{path}', or use another directory or 'off'")
    _check_above(Path(os.path.realpath(path)), path, label)


def _check_above(real: Path, path: Path, label: str, *, include_self: bool = False) -> None:
    """Every directory above ``real`` (and ``real`` itself with ``include_self``) must be owned
    by this user or root and not writable by others unless sticky."""
    uid = os.geteuid()
    for parent in ([real] if include_self else []) + list(real.parents):
        pst = os.stat(parent)
        writable = pst.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if pst.st_uid not in (uid, 0) or (writable and not pst.st_mode & stat.S_ISVTX):
            raise FTCInputError(
                f"{label} {path}: the directory above it, {parent}, can be changed by others "
                f"({_describe(pst)}), so the cache could be swapped: use a directory of your own "
                "or 'off'")


def ensure_private_dir(path: Path, *, label: str = "compilation cache") -> Path:
    """Create ``path`` (each missing level 0700: ``os.makedirs`` would give the upper levels the
    umask's mode) and check it with :func:`check_private_dir`. Returns the resolved path."""
    path = Path(path).expanduser().absolute()
    missing = []
    p = path
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if missing:   # refuse before creating anything below a directory others can change
        _check_above(Path(os.path.realpath(p)), path, label, include_self=True)
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:  # a concurrent process (another shard) made it: checked below
            pass
        except OSError as e:
            raise FTCInputError(f"{label} {path}: cannot create {p} ({e.strerror})") from None
    check_private_dir(path, label=label)
    return Path(os.path.realpath(path))


def configure_compilation_cache(option: Optional[str] = None, *,
                                environ: Optional[Mapping[str, str]] = None) -> Optional[Path]:
    """Point jax's persistent compilation cache at the user-level cache (or turn it off).

    Call before the first compilation (jax reads the setting when it first compiles).
    ``option`` is the CLI's ``--compilation-cache DIR|off`` (None: ``$FTCJAX_COMPILATION_CACHE``,
    else the XDG default). Every compilation is cached, however short: a small sweep's many
    sub-second kernels are what a new run would otherwise recompile. Returns the directory used.

    Raises:
      FTCInputError: the directory cannot be created, or is not private (see module docstring).
    """
    path = versioned_cache_dir(option, environ=environ)
    import jax

    if path is None:
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    path = ensure_private_dir(path)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


# what version_key() makes: only such directories of a cache root are listed and cleared
_VERSION_DIR = re.compile(r"^jax-[^/\\]+-jaxlib-[^/\\]+$")


def _tree_size(path: Path) -> tuple[int, int]:
    """(regular files, bytes) under ``path``, links not followed; vanished files skipped."""
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
    return files, size


def cache_usage(root: Path) -> list[dict]:
    """What a cache root holds, one dict per jax-version directory (sorted by name).

    Each: ``{"version", "path", "current" (this jax's), "jax_entries", "jax_bytes",
    "executables", "executables_bytes"}`` (jax's own entries, and ftcjax's compiled segments in
    ``ftcjax-executables/``). Directories not named like :func:`version_key` are not ftcjax's and
    not listed. An absent root holds nothing.

    Raises:
      FTCInputError: ``root`` exists but is not a directory of this user's alone.
    """
    from ftcjax._src.executables import STORE_DIRNAME

    root = Path(root)
    if not os.path.lexists(root):
        return []
    check_private_dir(root)
    now = version_key()
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not (_VERSION_DIR.match(entry.name) and entry.is_dir(follow_symlinks=False)):
            continue
        path = Path(entry.path)
        total_files, total_bytes = _tree_size(path)
        exe_files, exe_bytes = _tree_size(path / STORE_DIRNAME) if (path / STORE_DIRNAME).is_dir() else (0, 0)
        out.append({"version": entry.name, "path": str(path), "current": entry.name == now,
                    "jax_entries": total_files - exe_files, "jax_bytes": total_bytes - exe_bytes,
                    "executables": exe_files, "executables_bytes": exe_bytes})
    return out


def clear_cache(root: Path, *, all_versions: bool = False) -> list[dict]:
    """Delete this jax version's cache directory under ``root`` (every version's with
    ``all_versions``); returns the :func:`cache_usage` entries removed. Only version directories are
    removed (nothing else a user keeps under the root), and only from a root of this user's alone.
    A sweep running meanwhile recompiles what it no longer finds.

    Raises:
      FTCInputError: ``root`` is not a directory of this user's alone, or a directory cannot be removed.
    """
    removed = []
    for entry in cache_usage(root):
        if not (all_versions or entry["current"]):
            continue
        path = Path(entry["path"])
        check_private_dir(path)
        try:
            shutil.rmtree(path)
        except OSError as e:
            raise FTCInputError(f"compilation cache {path}: cannot remove it ({e.strerror})") from None
        removed.append(entry)
    return removed
