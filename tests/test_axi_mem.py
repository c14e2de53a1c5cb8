"""The Verilog AXI4 memory model (sim/hdl/axi_mem.v) and its hex-file helpers.

The model is driven from cocotb (sim/tb/axi_mem_tb.py) on Verilator and Icarus; every
expectation here comes from a small independent model of AXI INCR bursts over a numpy
byte image (split at 4 KiB and 256 beats, SLVERR by burst start, DECERR by beat).

The model is loaded and dumped through ``+mem_init``/``+mem_dump``, given to the
simulator by ``sim.runner.run(..., plusargs=...)``.
"""

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from serrano.sim import runner, toolenv
from serrano.sim.hdl import AXI_MEM_SOURCE, AXI_MEM_TOP, axi_mem_verilog, read_hex, write_hex

OKAY, SLVERR, DECERR = 0, 2, 3
TB = "serrano.sim.tb.axi_mem_tb"

# Two configurations: the default parameters, and a small odd one (4-byte words, a memory
# of 1000 words that is no multiple of 4 KiB, 16-bit addresses, 4-bit IDs).
CONFIGS = {
    "default": dict(name=AXI_MEM_TOP, data_bytes=16, addr_width=32, words=65536, id_width=1),
    "small": dict(name="serrano_axi_mem_small", data_bytes=4, addr_width=16, words=1000,
                  id_width=4),
}


def config_text(key):
    cfg = CONFIGS[key]
    if key == "default":
        return axi_mem_verilog()               # the file as is: its defaults are these
    return axi_mem_verilog(**cfg)


_BUILT = {}


def built_model(sim, key):
    if (sim, key) not in _BUILT:
        _BUILT[sim, key] = runner.build(sim, CONFIGS[key]["name"], config_text(key),
                                        tag="axi_mem")
    return _BUILT[sim, key]


def run_ok(sim, key, testcase, case, plusargs=()):
    """Run one cocotb test of sim/tb/axi_mem_tb.py and return what it saved."""
    result, _wall = runner.run(built_model(sim, key), TB, testcase, case,
                               verilog_text=config_text(key), tag="axi_mem",
                               plusargs=list(plusargs))
    return result


def run_fails(sim, key, testcase, case):
    """Run a test that must fail; return its simulator log."""
    with pytest.raises(runner.SimulationFailed) as info:
        runner.run(built_model(sim, key), TB, testcase, case, verilog_text=config_text(key),
                   tag="axi_mem")
    line = next(l for l in str(info.value).splitlines() if l.strip().startswith("log:"))
    return Path(line.split("log:", 1)[1].strip()).read_text(errors="replace")


# ----------------------------------------------------------------------------- golden model

def bursts(addr, length, db):
    """The INCR bursts of a transfer: [(start address, [word indices])], split where
    a burst would pass a 4 KiB boundary or 256 beats."""
    first, last = addr // db, (addr + length - 1) // db
    out = []
    for word in range(first, last + 1):
        if not out or len(out[-1][1]) == 256 or (word * db) % 4096 == 0:
            out.append((addr if word == first else word * db, []))
        out[-1][1].append(word)
    return out


class Golden:
    """The memory as a numpy byte image, with the model's error rules."""

    def __init__(self, image, db, words, err_lo=0, err_hi=0):
        self.mem = np.array(image, dtype=np.uint8)
        assert self.mem.size == db * words
        self.db, self.words, self.err = db, words, (err_lo, err_hi)
        self.read_beats = self.write_beats = 0

    def in_window(self, addr):
        return self.err[0] <= addr < self.err[1]

    def beat_resp(self, start, word):
        if word >= self.words:
            return DECERR
        return SLVERR if self.in_window(start) else OKAY

    def beat_data(self, start, word):
        if self.beat_resp(start, word) != OKAY:
            return bytes(self.db)
        return self.mem[word * self.db:(word + 1) * self.db].tobytes()

    def read(self, addr, length):
        """(last non-OKAY response or OKAY, data) as cocotbext-axi's master reports."""
        resp, data = OKAY, bytearray()
        for start, words in bursts(addr, length, self.db):
            for word in words:
                r = self.beat_resp(start, word)
                resp = r if r != OKAY else resp
                data += self.beat_data(start, word)
                self.read_beats += 1
        off = addr % self.db
        return resp, bytes(data[off:off + length])

    def write(self, addr, data):
        resp = OKAY
        end = addr + len(data)
        for start, words in bursts(addr, len(data), self.db):
            self.write_beats += len(words)
            decerr = any(w >= self.words for w in words)
            r = DECERR if decerr else (SLVERR if self.in_window(start) else OKAY)
            resp = r if r != OKAY else resp
            if self.in_window(start):
                continue
            lo = max(addr, words[0] * self.db)
            hi = min(end, (words[-1] + 1) * self.db, self.words * self.db)
            if hi > lo:
                self.mem[lo:hi] = np.frombuffer(data[lo - addr:hi - addr], dtype=np.uint8)
        return resp

    def write_beat(self, start, word, data, strb):
        """One raw beat: returns its response; stores the strobed bytes if allowed."""
        r = self.beat_resp(start, word)
        if r == OKAY:
            for i in range(self.db):
                if strb >> i & 1:
                    self.mem[word * self.db + i] = (data >> (8 * i)) & 0xFF
        return r


def test_bursts_split_like_axi():
    assert bursts(0x0FF8, 16, 16) == [(0x0FF8, [0xFF]), (0x1000, [0x100])]
    assert bursts(0x10, 4096, 16) == [(0x10, list(range(1, 256))), (0x1000, [256])]
    assert [len(w) for _, w in bursts(0, 4096, 4)] == [256, 256, 256, 256]
    assert bursts(5, 1, 4) == [(5, [1])]


# ----------------------------------------------------------------------------- stimulus

def random_ops(rng, cfg, n_ops, window):
    db, words, aw = cfg["data_bytes"], cfg["words"], cfg["addr_width"]
    mem_bytes, max_len = words * db, 256 * db
    ops = []
    while len(ops) < n_ops:
        kind = rng.choice(["read", "write"])
        where = rng.choice(["page", "word", "byte", "byte", "end", "beyond", "window"],
                           p=[0.2, 0.2, 0.2, 0.2, 0.08, 0.06, 0.06])
        beats = int(rng.choice([1, 2, int(rng.integers(1, 257)), 256, int(rng.integers(1, 33))]))
        length = max(1, beats * db - int(rng.integers(0, db)) * int(rng.random() < 0.5))
        if where == "page":
            addr = int(rng.integers(0, max(1, mem_bytes // 4096))) * 4096
        elif where == "word":
            addr = int(rng.integers(0, mem_bytes // db)) * db
        elif where == "byte":
            addr = int(rng.integers(0, mem_bytes))
        elif where == "end":
            addr = mem_bytes - int(rng.integers(1, 4 * db))
        elif where == "beyond":
            addr = mem_bytes + int(rng.integers(0, min(2 ** aw - mem_bytes - max_len, 1 << 16)))
        else:
            addr = int(rng.integers(*window))
        addr = min(addr, 2 ** aw - length)
        op = {"kind": kind, "addr": addr, "length": length}
        if kind == "write":
            op["data"] = rng.integers(0, 256, length, dtype=np.uint8).tobytes().hex()
        ops.append(op)
    return ops


def in_rounds(ops, rng, max_per_round=5):
    """Group ops into rounds run concurrently; a write overlaps nothing in its round."""
    rounds, cur = [], []
    for op in ops:
        a, b = op["addr"], op["addr"] + op["length"]
        clash = any(a < o["addr"] + o["length"] and o["addr"] < b
                    and "write" in (op["kind"], o["kind"]) for o in cur)
        if clash or len(cur) >= rng.integers(1, max_per_round + 1):
            rounds.append(cur)
            cur = []
        cur.append(op)
    if cur:
        rounds.append(cur)
    return rounds


# ----------------------------------------------------------------------------- cocotb tests

@pytest.mark.parametrize("key", ["default", "small"])
def test_random_traffic(simulator, rng, tmp_path, key):
    """Random reads and writes (1..256 beats, page-aligned, word-aligned and byte starts,
    across the end of memory, beyond it, in the SLVERR window) from AxiMaster, checked
    against the golden image; then the dump file must equal the final image."""
    cfg = CONFIGS[key]
    db, words = cfg["data_bytes"], cfg["words"]
    mem_bytes = db * words
    err_lo = int(rng.integers(1, mem_bytes // 2))
    err_hi = err_lo + int(rng.integers(db, 3 * 256 * db))
    plusargs = [f"+mem_dump={tmp_path / 'dump.hex'}"]
    if key == "default":
        # Loaded from a file (the first 3/4 of it: the rest must read as zero).
        image = np.zeros(mem_bytes, dtype=np.uint8)
        image[:3 * mem_bytes // 4] = rng.integers(0, 256, 3 * mem_bytes // 4)
        write_hex(tmp_path / "init.hex", image, db, words=words)
        plusargs.append(f"+mem_init={tmp_path / 'init.hex'}")
        pause = {"aw": 0.3, "w": 0.3, "b": 0.5, "ar": 0.3, "r": 0.3}
        n_ops = 150
    else:
        image = np.zeros(mem_bytes, dtype=np.uint8)   # no +mem_init: starts all zero
        pause = {"aw": 0.0, "w": 0.0, "b": 0.0, "ar": 0.0, "r": 0.0}
        n_ops = 200
    ops = random_ops(rng, cfg, n_ops, (err_lo, err_hi))
    rounds = in_rounds(ops, rng)
    case = {"read_latency": int(rng.integers(1, 40)), "write_latency": int(rng.integers(1, 40)),
            "err_lo": err_lo, "err_hi": err_hi, "pause": pause, "seed": int(rng.integers(1 << 30)),
            "rounds": rounds, "dump": True,
            "max_cycles": 20 * sum(op["length"] // db + 60 for op in ops)}

    gold = Golden(image, db, words, err_lo, err_hi)
    expect = []
    for ops_ in rounds:
        answers = [gold.read(op["addr"], op["length"]) if op["kind"] == "read" else None
                   for op in ops_]
        answers = [a if a is not None else (gold.write(op["addr"], bytes.fromhex(op["data"])),
                                             None)
                   for a, op in zip(answers, ops_)]
        expect.append(answers)
    kinds = {(op["kind"], r) for ops_, ex in zip(rounds, expect) for op, (r, _) in zip(ops_, ex)}
    for needed in [("read", OKAY), ("write", OKAY), ("read", SLVERR), ("write", SLVERR),
                   ("read", DECERR), ("write", DECERR)]:
        assert needed in kinds, f"the random stimulus never produced {needed}"

    result = run_ok(simulator, key, "traffic", case, plusargs)
    for i, (ops_, ex, got) in enumerate(zip(rounds, expect, result["rounds"])):
        for op, (resp, data), answer in zip(ops_, ex, got):
            where = f"round {i} {op['kind']} at {op['addr']:#x}+{op['length']}"
            assert answer["resp"] == resp, where
            if op["kind"] == "read":
                assert answer["data"] == data.hex(), where
    assert result["reads_beats"] == gold.read_beats
    assert result["write_beats"] == gold.write_beats
    dumped = np.frombuffer(read_hex(tmp_path / "dump.hex", mem_bytes, db), dtype=np.uint8)
    bad = np.flatnonzero(dumped != gold.mem)
    assert bad.size == 0, f"dump differs from the golden image at bytes {bad[:8]}"


def test_read_throughput_and_latency(simulator, rng, tmp_path):
    """read_latency 30, 8 bursts of 64 beats issued back to back: the first beat comes
    exactly 30 cycles after the first AR, then 512 beats without a bubble. 16 ARs are
    held at once, and B comes write_latency cycles after the last W beat."""
    cfg = CONFIGS["default"]
    db, words = cfg["data_bytes"], cfg["words"]
    image = rng.integers(0, 256, db * words, dtype=np.uint8)
    write_hex(tmp_path / "init.hex", image, db)
    base = 0x3_0000
    case = {"read_latency": 30, "write_latency": 7, "data_bytes": db, "n_bursts": 8,
            "beats": 64, "n_short": 20, "base": base, "max_cycles": 5000}
    result = run_ok(simulator, "default", "timing", case,
                    [f"+mem_init={tmp_path / 'init.hex'}"])

    reads = result["reads"]
    assert len(reads["ar"]) == 8 and len(reads["r"]) == 512
    assert bytes.fromhex(result["read_data"]) == image[base:base + 512 * db].tobytes()
    first_ar, r = reads["ar"][0], reads["r"]
    assert r[0] - first_ar == 30, "first beat not read_latency cycles after its AR"
    assert r == list(range(r[0], r[0] + 512)), "a bubble on the R channel"
    span = r[-1] - first_ar + 1
    assert span <= 512 + 30 + 10
    print(f"{simulator}: 512 beats in {span} cycles from the first AR handshake "
          f"(ARs at +{[a - first_ar for a in reads['ar']]})")

    # 20 one-beat reads: 16 ARs are taken at once, the 17th when the first has its beat.
    short = result["short_reads"]
    ar, r = short["ar"], short["r"]
    assert len(ar) == 20 and len(r) == 20
    assert ar[:16] == list(range(ar[0], ar[0] + 16)), "fewer than 16 ARs held"
    assert r[0] == ar[0] + 30 and ar[16] == r[0] + 1

    single = result["single_write"]
    assert len(single["w_last"]) == 1
    assert single["b_valid"][0] - single["w_last"][0] == 7

    writes = result["writes"]
    w = writes["w"]
    assert len(w) == 512 and len(writes["w_last"]) == 8
    # The model never holds WREADY low here: any gap is the master's.
    assert len(writes["b_valid"]) >= 8
    for last, b in zip(writes["w_last"], sorted(set(writes["b_valid"]))):
        assert b >= last + 7
    print(f"{simulator}: 512 W beats in {w[-1] - w[0] + 1} cycles")


def test_w_never_stalls_when_aw_is_known(simulator):
    """With every AW ahead of its data and B always accepted, WREADY never drops."""
    case = {"read_latency": 1, "write_latency": 1, "data_bytes": 16, "n_bursts": 8,
            "beats": 64, "n_short": 4, "base": 0, "max_cycles": 5000}
    result = run_ok(simulator, "default", "timing", case)
    w = result["writes"]["w"]
    assert w == list(range(w[0], w[0] + 512)), "a bubble on the W channel"
    single = result["single_write"]
    assert single["b_valid"][0] - single["w_last"][0] == 1


def raw_case(rng):
    """Direct channel stimulus on the small configuration (4-byte words, 1000 words)."""
    db, words = 4, 1000
    err_lo, err_hi = 0x800, 0x840
    steps = []

    def write(addr, n, w_first, gap, ident, strobes=None, **extra):
        beats = [[f"{int(rng.integers(0, 1 << 32)):08x}",
                  int(strobes[i]) if strobes is not None else int(rng.integers(0, 16))]
                 for i in range(n)]
        steps.append({"kind": "write", "id": ident, "addr": addr, "size": 2, "beats": beats,
                      "w_first": w_first, "gap": gap, **extra})

    def read(addr, n, ident, **extra):
        steps.append({"kind": "read", "id": ident, "addr": addr, "len": n - 1, "size": 2,
                      **extra})

    write(0x100, 4, True, 5, 3, strobes=[0b0101, 0b1010, 0b0000, 0b1111])
    write(0x203, 20, False, 3, 9)                     # unaligned start, sparse strobes
    write(0x300, 40, True, 12, 15)                    # more W beats than the W queue holds
    write(0x400, 1, True, 0, 1)
    read(0x100, 4, 2)
    read(0x200, 21, 7)
    read(0x300, 40, 14)
    read(0x400, 1, 0)
    write(4 * (words - 3), 8, False, 0, 5)            # straddles the end: DECERR
    read(4 * (words - 5), 10, 6)                      # OKAY x5, then DECERR x5 with zeros
    write(err_lo + 8, 3, True, 2, 11)                 # SLVERR window: nothing written
    read(err_lo, 12, 12)                              # starts in the window: all SLVERR
    read(err_lo - 8, 4, 13)                           # starts before it: OKAY throughout
    return {"read_latency": 3, "write_latency": 5, "err_lo": err_lo, "err_hi": err_hi,
            "steps": steps, "max_cycles": 3000}, db, words


def raw_golden(case, db, words):
    gold = Golden(np.zeros(db * words, dtype=np.uint8), db, words, case["err_lo"],
                  case["err_hi"])
    out = []
    for step in case["steps"]:
        start, first = step["addr"], step["addr"] // db
        if step["kind"] == "write":
            resps = [gold.write_beat(start, first + k, int(d, 16), s)
                     for k, (d, s) in enumerate(step["beats"])]
            resp = DECERR if DECERR in resps else (SLVERR if SLVERR in resps else OKAY)
            out.append({"id": step["id"], "resp": resp})
        else:
            n = step["len"] + 1
            out.append([{"id": step["id"],
                         "data": gold.beat_data(start, first + k).hex(),
                         "resp": gold.beat_resp(start, first + k), "last": int(k == n - 1)}
                        for k in range(n)])
    return out, gold


def test_raw_channels(simulator, rng):
    """W before AW (including more beats than the W queue), sparse strobes, IDs echoed,
    per-beat DECERR across the end of memory, SLVERR by burst start."""
    case, db, words = raw_case(rng)
    result = run_ok(simulator, "small", "raw", case)
    expect, gold = raw_golden(case, db, words)
    for step, want, got in zip(case["steps"], expect, result["steps"]):
        if step["kind"] == "read":
            for beat in got:                      # hex of the little-endian word -> bytes
                beat["data"] = int(beat["data"], 16).to_bytes(db, "little").hex()
        assert got == want, f"{step['kind']} at {step['addr']:#x}"
    # B timing: beat k of a burst is written in cycle c_k = max(t_k, c_(k-1) + 1, t_aw)
    # (its W handshake, one write per cycle, not before its AW); B is valid from
    # max(t_last + write_latency, c_last + 1).
    for step, log in zip(case["steps"], result["logs"]):
        if step["kind"] == "read":
            (t_ar,), r = log["ar"], log["r"]
            assert r == list(range(t_ar + case["read_latency"],
                                   t_ar + case["read_latency"] + step["len"] + 1))
            continue
        (t_aw,), w = log["aw"], log["w"]
        assert len(w) == len(step["beats"])
        if step["w_first"] and step["gap"]:   # the W queue takes 16 beats ahead of the AW
            k = min(16, len(w))
            assert w[0] < t_aw and w[:k] == list(range(w[0], w[0] + k)), "W held back"
        c = -1
        for t in w:
            c = max(t, c + 1, t_aw)
        b_first = max(w[-1] + case["write_latency"], c + 1)
        assert log["b_valid"] == [b_first], f"B of the write at {step['addr']:#x}"
    assert result["write_beats"] == sum(len(s["beats"]) for s in case["steps"]
                                        if s["kind"] == "write")
    assert result["reads_beats"] == sum(s["len"] + 1 for s in case["steps"]
                                        if s["kind"] == "read")


@pytest.mark.parametrize("fault", ["arsize", "arburst", "awsize", "wlast"])
def test_protocol_error_ends_simulation(simulator, rng, fault):
    """An unsupported AxSIZE/AxBURST or a wrong WLAST stops the run with an ERROR line."""
    case, _db, _words = raw_case(rng)
    steps = [next(s for s in case["steps"] if s["addr"] == 0x100 and s["kind"] == kind)
             for kind in ("write", "read")]
    bad = [dict(s) for s in steps]
    if fault == "arsize":
        bad[1]["size"], message = 1, "AR size 1 burst 1 unsupported (need size 2, INCR)"
    elif fault == "arburst":
        bad[1]["burst"], message = 0, "AR size 2 burst 0 unsupported (need size 2, INCR)"
    elif fault == "awsize":
        bad[0]["size"], message = 3, "AW size 3 burst 1 unsupported (need size 2, INCR)"
    else:
        bad[0]["awlen"] = len(bad[0]["beats"])           # one beat more than WLAST ends
        message = "WLAST 1 on beat 3 of a 5-beat burst"
    # The same steps, legal, pass: the failure below is the fault's doing.
    assert len(run_ok(simulator, "small", "raw", {**case, "steps": steps})["steps"]) == 2
    log = run_fails(simulator, "small", "raw", {**case, "steps": bad})
    assert f"ERROR: serrano_axi_mem_small: {message}" in log, log[-2000:]


def test_dump_without_plusarg_ends_simulation(simulator):
    case = {"read_latency": 1, "write_latency": 1}
    log = run_fails(simulator, "small", "dump_without_path", case)
    assert "ERROR: serrano_axi_mem_small: dump is high but no +mem_dump" in log, log[-2000:]


# ----------------------------------------------------------------------------- Verilog, lint

@pytest.mark.parametrize("key", ["default", "small"])
def test_verilator_lint_clean(key, tmp_path):
    from tests.conftest import require_simulator
    require_simulator("verilator")
    path = tmp_path / "axi_mem.v"
    path.write_text(config_text(key))
    env = {**os.environ, **toolenv.tool_env()}
    proc = subprocess.run(["verilator", "--lint-only", "-Wall", str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    warnings = [l for l in proc.stderr.splitlines() if l.startswith("%")]
    assert proc.returncode == 0 and not warnings, "\n".join(warnings)


def test_axi_mem_verilog_parameters():
    text = axi_mem_verilog()
    assert text == AXI_MEM_SOURCE.read_text()
    other = axi_mem_verilog(name="mem_b", data_bytes=8, addr_width=20, words=300, id_width=3)
    assert "module mem_b #(" in other and "module serrano_axi_mem" not in other
    for line in ["parameter DATA_BYTES = 8", "parameter ADDR_WIDTH = 20",
                 "parameter WORDS = 300", "parameter ID_WIDTH = 3"]:
        assert line in other
    assert other.count("\n") == text.count("\n")
    with pytest.raises(ValueError, match=r"^data_bytes must be a power of two up to 128, "
                                         r"not 12$"):
        axi_mem_verilog(data_bytes=12)
    with pytest.raises(ValueError, match=r"^words must be a positive integer, not 0$"):
        axi_mem_verilog(words=0)
    with pytest.raises(ValueError, match=r"^id_width must be a positive integer, not 1.5$"):
        axi_mem_verilog(id_width=1.5)
    with pytest.raises(ValueError, match=r"^name must be a Verilog identifier, not '2x'$"):
        axi_mem_verilog(name="2x")
    with pytest.raises(ValueError, match=r"^words must be at most 4096 for addr_width 16, "
                                         r"not 5000$"):
        axi_mem_verilog(addr_width=16, words=5000, data_bytes=16)


# ----------------------------------------------------------------------------- hex files

def test_hex_layout_little_endian(tmp_path):
    image = bytes(range(20))
    assert write_hex(tmp_path / "a.hex", image, 16) == 2
    lines = (tmp_path / "a.hex").read_text().splitlines()
    assert lines == ["0f0e0d0c0b0a09080706050403020100", "00000000000000000000000013121110"]
    assert read_hex(tmp_path / "a.hex", 20, 16) == image
    assert read_hex(tmp_path / "a.hex", 32, 16) == image + bytes(12)
    assert write_hex(tmp_path / "b.hex", image, 4, words=9) == 9
    assert (tmp_path / "b.hex").read_text().splitlines()[0] == "03020100"
    assert read_hex(tmp_path / "b.hex", 36, 4) == image + bytes(16)
    with pytest.raises(ValueError, match="holds 36 bytes, fewer than the 37 asked for"):
        read_hex(tmp_path / "b.hex", 37, 4)
    with pytest.raises(ValueError, match=r"^words must be an integer of at least 5"):
        write_hex(tmp_path / "c.hex", image, 4, words=4)
    with pytest.raises(ValueError, match=r"^data_bytes must be a power of two up to 128, "
                                         r"not 3$"):
        write_hex(tmp_path / "c.hex", image, 3)
    with pytest.raises(ValueError, match=r"^image must be bytes or a uint8 array, not str$"):
        write_hex(tmp_path / "c.hex", "abc", 4)


def test_read_hex_other_syntax(tmp_path):
    """What simulators write ($writememh comments in Icarus) and what $readmemh accepts."""
    path = tmp_path / "m.hex"
    path.write_text("// 0x00000000\n0a0b0c0d\n11223344\n")
    assert read_hex(path, 8, 4) == bytes.fromhex("0d0c0b0a44332211")
    path.write_text("@1 1122_3344 // c\nff\n@0\n0a0b0c0d\n")
    assert read_hex(path, 12, 4) == bytes.fromhex("0d0c0b0a44332211ff000000")
    path.write_text("0a0b0c0d\nxxxxxxxx\n")
    with pytest.raises(ValueError, match=r"^word 1 is 'xxxxxxxx', not a hex number"):
        read_hex(path, 8, 4)
    path.write_text("0a0b0c0d\n1xxxxxxx\n")
    with pytest.raises(ValueError, match=r"^word 1 is '1xxxxxxx', not a hex number"):
        read_hex(path, 8, 4)


def test_hex_4mib_under_a_second(rng, tmp_path):
    image = rng.integers(0, 256, 4 << 20, dtype=np.uint8)
    t0 = time.perf_counter()
    write_hex(tmp_path / "big.hex", image, 16)
    t1 = time.perf_counter()
    back = read_hex(tmp_path / "big.hex", image.size, 16)
    t2 = time.perf_counter()
    assert back == image.tobytes()
    assert t1 - t0 < 1.0 and t2 - t1 < 1.0, f"write {t1 - t0:.2f} s, read {t2 - t1:.2f} s"
