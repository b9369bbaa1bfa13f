"""Pack a Python environment for the executors: sparkdl from its wheel, and what it needs.

Executors run ``python -m sparkdl.worker`` (and PySpark's workers) with their own
Python, which must import sparkdl, torch, pyspark, pyarrow (and Horovod when used).
Where the cluster's machines lack such a Python (YARN's NodeManagers, Kubernetes), ship
one with the job, the standard way::

    python -m sparkdl.pack_env --wheel dist/sparkdl-0.1.0-py3-none-any.whl \\
        --output sparkdl-env.tar
    spark-submit --archives sparkdl-env.tar#environment \\
        --conf spark.pyspark.python=./environment/bin/python app.py

The archive is a virtual environment packed with ``venv-pack`` (relocatable: scripts'
shebangs become ``/usr/bin/env python``). It holds sparkdl installed from the wheel
(so the Scala jar too, in ``sparkdl/jars/``) and the distributions sparkdl requires,
transitively, Horovod included when installed, copied at the versions installed in the
*source* environment (default: this one). Nothing is downloaded: torch and its CUDA
libraries come from the source environment (hard links where it shares a filesystem
with the cache, so staging costs seconds). Editable installs in the source environment
(``pip install -e .``) are never copied: sparkdl always comes from the wheel.

Like any venv, the archive does not contain the Python interpreter: ``bin/python``
links to the interpreter the source environment was made from (``--python-prefix``
names where it is on the executors, if elsewhere).

Archives are cached under ``~/.cache/sparkdl/env/<key>/`` (``SPARKDL_ENV_CACHE``), the
key a hash of the wheel, each packed distribution's name and version, the format and the
Python, so a test session or a rerun builds it at most once.

Example:
    >>> from sparkdl.pack_env import archive_name
    >>> archive_name("tar.gz")
    'sparkdl-env.tar.gz'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from sparkdl.errors import ConfigError

FORMATS = ("tar", "tar.gz", "tgz", "zip")  # what Spark's --archives unpacks
# Imported by the packed Python before an archive is cached: a broken one never is.
_CHECK_IMPORTS = ("sparkdl", "sparkdl.worker", "torch", "pyspark", "pyarrow")


def archive_name(fmt: str = "tar") -> str:
    """The archive's file name for a format (``tar``, ``tar.gz``, ``tgz`` or ``zip``)."""
    return f"sparkdl-env.{fmt}"


def default_cache_dir() -> Path:
    """``$SPARKDL_ENV_CACHE``, else ``~/.cache/sparkdl/env``."""
    return Path(os.environ.get("SPARKDL_ENV_CACHE")
                or Path.home() / ".cache" / "sparkdl" / "env").expanduser()


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class _Requirement:
    name: str
    extras: frozenset[str]


def _parse_requirement(text: str, extras: frozenset[str]) -> _Requirement | None:
    """A ``Requires-Dist`` line, or None when its marker excludes it here.

    ``packaging`` does the parsing; it ships with pip, setuptools and most environments.
    """
    from packaging.requirements import Requirement

    req = Requirement(text)
    if req.marker is not None:
        envs = [{"extra": e} for e in sorted(extras)] or [{"extra": ""}]
        if not any(req.marker.evaluate(env) for env in envs):
            return None
    return _Requirement(_canonical(req.name), frozenset(req.extras))


def _wheel_metadata(wheel: Path) -> tuple[str, str, list[str]]:
    """(name, version, Requires-Dist lines) from a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise ConfigError(f"{wheel} is not a wheel (no single .dist-info/METADATA).")
        meta = Parser().parsestr(zf.read(names[0]).decode())
    return meta["Name"], meta["Version"], meta.get_all("Requires-Dist") or []


def _site_packages(prefix: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(prefix),
                                                     "platbase": str(prefix)}))


def _closure(source: Path, roots: list[str], skip: str) -> list[metadata.Distribution]:
    """The distributions of ``source`` that ``roots`` need, transitively (not ``skip``)."""
    site = _site_packages(source)
    installed = {_canonical(d.metadata["Name"]): d
                 for d in metadata.distributions(path=[str(site)])}
    todo = [r for r in (_parse_requirement(t, frozenset()) for t in roots) if r]
    seen: dict[str, set[str]] = {}
    while todo:
        req = todo.pop()
        if req.name == skip or (req.name in seen and req.extras <= seen[req.name]):
            continue
        dist = installed.get(req.name)
        if dist is None:
            raise ConfigError(
                f"{req.name} is required but not installed in the source environment "
                f"{source}. Install it there (`pip install {req.name}`), or pass "
                "--source an environment that has it.")
        extras = seen.setdefault(req.name, set())
        extras |= req.extras
        for text in dist.requires or []:
            sub = _parse_requirement(text, frozenset(extras))
            if sub is not None:
                todo.append(sub)
    return sorted((installed[n] for n in seen), key=lambda d: _canonical(d.metadata["Name"]))


def _cache_key(wheel: Path, dists: list[metadata.Distribution], fmt: str,
               compress_level: int, python_prefix: str | None) -> str:
    import venv_pack

    h = hashlib.sha256()
    # the wheel's contents, not its bytes: a rebuilt wheel of the same files differs only
    # in the zip's timestamps, and must hit the cache
    with zipfile.ZipFile(wheel) as zf:
        for info in sorted(zf.infolist(), key=lambda i: i.filename):
            h.update(f"{info.filename}:{info.CRC}:{info.file_size};".encode())
    h.update(json.dumps({
        "dists": [(_canonical(d.metadata["Name"]), d.version) for d in dists],
        "format": fmt, "compress_level": compress_level, "python_prefix": python_prefix,
        "python": sys.version, "base": sys._base_executable,
        "venv_pack": venv_pack.__version__, "layout": 1,
    }, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same filesystem: no bytes copied (torch + CUDA is ~5 GB)
    except OSError:
        shutil.copy2(src, dst)


def _copy_dist(dist: metadata.Distribution, source: Path, dest: Path) -> None:
    """Copy one installed distribution's files (its RECORD) from ``source`` to ``dest``."""
    if dist.files is None:
        raise ConfigError(f"{dist.metadata['Name']} in {source} has no RECORD file, so its "
                          "files are unknown; reinstall it with pip.")
    old_bin, new_bin = f"#!{source}/bin/".encode(), f"#!{dest}/bin/".encode()
    for file in dist.files:
        src = Path(os.path.normpath(dist.locate_file(file)))
        try:
            rel = src.relative_to(source)
        except ValueError:
            continue  # installed outside the environment (e.g. a --user file): not ours
        if not src.is_file():
            continue  # listed but removed (a .pyc never written)
        dst = dest / rel
        if rel.parts[0] == "bin":
            # console scripts: shebang into the new environment, which venv-pack then
            # makes relocatable (#!/usr/bin/env python3.x); a new file, never a link
            data = src.read_bytes()
            if data.startswith(old_bin):
                data = new_bin + data[len(old_bin):]
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            shutil.copymode(src, dst)
        else:
            _link_or_copy(src, dst)


def _prune(cache: Path, keep: int, current: Path) -> None:
    """Delete all but the ``keep`` newest cached archives (each is gigabytes)."""
    entries = sorted((d for d in cache.iterdir()
                      if d.is_dir() and any(d.glob("sparkdl-env.*")) and d != current),
                     key=lambda d: d.stat().st_mtime, reverse=True)
    for old in entries[max(keep - 1, 0):]:
        shutil.rmtree(old, ignore_errors=True)


def _check(python: Path, horovod: bool) -> str:
    """Import the essentials with the packed Python, from outside any source tree."""
    modules = [*_CHECK_IMPORTS, *(["horovod.torch"] if horovod else [])]
    code = ("import importlib, json, sys\n"
            f"mods = {modules!r}\n"
            "for m in mods: importlib.import_module(m)\n"
            "import sparkdl, sparkdl.jvm, torch\n"
            "print(json.dumps({'sparkdl': sparkdl.__file__, 'jar': sparkdl.jvm.jar_path(),"
            " 'torch': torch.__version__, 'prefix': sys.prefix}))\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
    run = subprocess.run([str(python), "-c", code], cwd=tempfile.gettempdir(), env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise ConfigError(f"The packed environment's Python cannot import {modules}:\n"
                          f"{run.stderr[-3000:]}")
    return run.stdout.strip().splitlines()[-1]


def build(wheel: str | os.PathLike, output: str | os.PathLike | None = None, *,
          fmt: str = "tar", compress_level: int = 1, horovod: bool | None = None,
          source: str | os.PathLike | None = None, python_prefix: str | None = None,
          cache_dir: str | os.PathLike | None = None, keep: int = 2,
          verbose: bool = False) -> Path:
    """Build (or reuse from the cache) an environment archive holding sparkdl's wheel.

    Args:
        wheel: the sparkdl wheel (``make dist`` builds ``dist/sparkdl-<ver>-*.whl``).
        output: where to put the archive (a hard link or copy of the cached one);
            default: just return the cached archive's path.
        fmt: ``tar`` (default: no compression, fastest to pack and unpack), ``tar.gz``,
            ``tgz`` or ``zip``.
        compress_level: gzip/zip level, 0-9 (ignored for ``tar``).
        horovod: pack Horovod too; default: when the source environment has it.
        source: the environment whose installed distributions are copied (default: the
            running one, ``sys.prefix``).
        python_prefix: where the Python interpreter lives on the executors, when not
            where it lives here (see ``venv-pack --python-prefix``).
        cache_dir: default :func:`default_cache_dir`.
        keep: how many archives the cache keeps (the newest, this one included).
        verbose: print what it does, with timings.

    Returns:
        The archive's path (``output`` if given).

    Raises:
        ConfigError: a missing wheel or distribution, an unknown format, or a packed
            Python that cannot import sparkdl and torch; the message names the fix.

    Example::

        from sparkdl.pack_env import build
        archive = build("dist/sparkdl-0.1.0-py3-none-any.whl")
        # spark.archives=<archive>#environment, spark.pyspark.python=./environment/bin/python
    """
    def say(msg: str) -> None:
        if verbose:
            print(f"[pack_env {time.monotonic() - t0:6.1f}s] {msg}", flush=True)

    t0 = time.monotonic()
    wheel = Path(wheel).expanduser().resolve()
    if not wheel.is_file():
        raise ConfigError(f"No wheel at {wheel}. Build it with `make dist` (or `pip wheel "
                          "--no-deps -w dist .`) in the sparkdl source tree.")
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown archive format {fmt!r}; use one of {', '.join(FORMATS)} "
                          "(what Spark's --archives unpacks).")
    if not 0 <= compress_level <= 9:
        raise ConfigError(f"compress_level must be 0-9, got {compress_level}.")
    try:
        import venv_pack
    except ImportError:
        raise ConfigError("Packing needs venv-pack: `pip install 'sparkdl[pack]'` "
                          "(or `pip install venv-pack`).") from None
    source = Path(source or sys.prefix).resolve()
    name, _version, requires = _wheel_metadata(wheel)
    if horovod is None:
        horovod = any(_canonical(d.metadata["Name"]) == "horovod"
                      for d in metadata.distributions(path=[str(_site_packages(source))]))
    dists = _closure(source, requires + (["horovod"] if horovod else []), _canonical(name))
    key = _cache_key(wheel, dists, fmt, compress_level, python_prefix)
    cache = Path(cache_dir or default_cache_dir()).expanduser().resolve()
    cached = cache / key / archive_name(fmt)
    if cached.is_file():
        os.utime(cached.parent)  # recently used: the last to be pruned
        say(f"cached: {cached}")
    else:
        say(f"building {cached}: {wheel.name} + {len(dists)} distributions from {source}")
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{key}-", dir=cache) as tmp:
            staging = Path(tmp) / "env"
            # from inside a venv, EnvBuilder uses the base interpreter: bin/python links
            # to the real Python, which venv-pack keeps (or points at --python-prefix)
            venv.EnvBuilder(symlinks=True, with_pip=False).create(staging)
            for dist in dists:
                _copy_dist(dist, source, staging)
            say(f"copied {len(dists)} distributions")
            subprocess.run([sys.executable, "-m", "pip", "--python", str(staging / "bin" /
                            "python"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
                           check=True)
            say(f"installed {wheel.name}; imports: {_check(staging / 'bin' / 'python', horovod)}")
            partial = Path(tmp) / archive_name(fmt)
            venv_pack.pack(prefix=str(staging), output=str(partial), format=fmt,
                           compress_level=compress_level, python_prefix=python_prefix)
            partial.chmod(0o644)  # readable by the cluster's users (YARN's, say)
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial.replace(cached)  # atomic: a concurrent session sees all or nothing
        say(f"packed {cached.stat().st_size / 2**30:.2f} GiB")
        _prune(cache, keep, cached.parent)
    if output is None:
        return cached
    output = Path(output).expanduser().resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.unlink(missing_ok=True)
    _link_or_copy(cached, output)
    return output


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sparkdl.pack_env",
        description="Pack sparkdl's wheel and its dependencies (torch, pyspark, pyarrow, "
                    "Horovod) as a relocatable environment for spark.archives.")
    parser.add_argument("--wheel", required=True, help="the sparkdl wheel (make dist)")
    parser.add_argument("--output", "-o", help="where to put the archive "
                        "(default: print the cached archive's path)")
    parser.add_argument("--format", default="tar", choices=FORMATS, dest="fmt")
    parser.add_argument("--compress-level", type=int, default=1)
    parser.add_argument("--no-horovod", action="store_false", dest="horovod", default=None)
    parser.add_argument("--source", help="environment to copy distributions from "
                        "(default: this Python's)")
    parser.add_argument("--python-prefix", help="the interpreter's prefix on the executors")
    parser.add_argument("--cache-dir", help=f"default: {default_cache_dir()}")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = build(args.wheel, args.output, fmt=args.fmt, compress_level=args.compress_level,
                     horovod=args.horovod, source=args.source,
                     python_prefix=args.python_prefix, cache_dir=args.cache_dir,
                     verbose=not args.quiet)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
