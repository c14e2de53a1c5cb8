"""An energy model of serrano: counted events times energy per event.

These are **model estimates from counted events, not measurements of silicon**. The
events come from the accelerator's own counters (:mod:`hw.regs`) and from the structure
of the programs it ran (:func:`program_counts`); the energy per event comes from
Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014
(45 nm, 0.9 V), stored in ``sw/energy_default.json`` and replaceable by another JSON file
of the same keys (:func:`load_constants`).

Events and their energies
-------------------------
``mac``
    One int8 multiply-accumulate of the array: ``mac_multiply_pj`` (int8 multiply,
    0.2 pJ) + ``mac_add_pj`` (int8 add, 0.03 pJ) = 0.23 pJ. Count: every PE in every
    cycle an activation row enters the array, ``array_cycles * R * C`` (padding rows and
    columns included: the array does that work). The product is added into an int32
    partial sum; the table's int8 add is used as the brief of this model states (an int32
    add, 0.1 pJ, would make a MAC 0.3 pJ: change ``mac_add_pj`` to see it).
``requant``
    One output element through the requantizer: one int32 add (bias, 0.1 pJ) and one
    32-bit multiply (3.1 pJ). Count: ``(store_rows - store_raw_rows) * C`` (a raw
    ``STORE`` bypasses the requantizer). The rounding shift and the clamp are not counted.
``scale`` (per element)
    One output element of a ``Q4`` or ``Q8`` ``MATMUL`` through the block scaler
    (``d * (16 P - 120 S + f S)``, or ``d * P``): two multiplies and two adds, priced as
    the requantizer's (32-bit: an upper bound for its three multipliers of at most 18 x 18 bits).
    Count: ``block_rows * C``, ``block_rows`` the array rows of block-format ``MATMUL``s.
``sram`` (per byte, per buffer)
    The table gives the energy of one 64-bit access to an SRAM array of 8 KB, 32 KB and
    1 MB (10, 20, 100 pJ). A buffer of ``S`` bytes costs the table's value interpolated
    linearly in ``log2(S)`` between the neighbouring points, held at the end values
    outside the table (no extrapolation: below 8 KB the 8 KB value, above 1 MB the 1 MB
    value), divided by 8 for one byte. Reads and writes cost the same. The buffers and
    their byte counts (``R = C``: a row of the activation buffer is ``R`` bytes, of the
    accumulator ``C * 4`` bytes):

    =============  ================================  =====================================
    buffer         bytes read                        bytes written
    =============  ================================  =====================================
    act_buf        ``array_cycles * R`` (one row     ``act_load_bytes`` (``LOAD_ACT``) +
                   into the array per cycle)         ``store_buf_rows * R`` (``STORE`` to
                                                     the buffer)
    accumulator    ``array_cycles * C * 4`` (the     ``array_cycles * C * 4`` (one result
                   read of read-modify-write) +      row per array cycle)
                   ``store_rows * C * 4`` (stores)
    weight_fifo    ``weight_bytes``                  ``weight_bytes`` (every weight byte a
                                                     ``MATMUL`` streams goes in and out)
    param_buf      ``stores * PARAM_BEATS *          ``param_load_bytes`` (``LOAD_PARAM``)
                   bus_bytes`` (each ``STORE``
                   reads its parameter set)
    =============  ================================  =====================================

    Sizes: ``act_buf_bytes``, ``acc_buf_bytes`` (both halves: one memory),
    ``weight_fifo_rows * C``, ``param_tiles * PARAM_BEATS * bus_bytes``.
``dram`` (per byte)
    ``dram_pj_per_64bit_access / 8``: the table's upper value, 2.6 nJ per 64-bit access,
    325 pJ per byte (the range is 1.3 to 2.6 nJ; the upper end is this model's choice).
    Count: ``dma_read_bytes + dma_write_bytes`` from the counters (instructions,
    activations, parameters, weights; outputs).
``host`` (per round trip)
    Only when ``host_round_trip_j`` is a number (the default is ``null``: no number in the
    table justifies one). Otherwise round trips are reported beside the energy, not in it.

Not counted: static (leakage) power, clocks, the PE pipeline registers, control logic,
the instruction and command queues (registers, not SRAM). The total is therefore a
floor of the dynamic energy of the events above.
"""

import functools
import json
import math
from pathlib import Path

from serrano.hw import isa
from .isa_model import decode_program, weight_bytes

__all__ = ["DEFAULT_CONSTANTS_PATH", "NOTE", "COUNT_KEYS", "load_constants",
           "sram_pj_per_byte", "buffer_sizes", "program_counts", "counter_mismatches",
           "estimate"]

DEFAULT_CONSTANTS_PATH = Path(__file__).with_name("energy_default.json")

NOTE = ("model estimate from counted events (accelerator counters and program structure) "
        "times per-event energies of Horowitz, ISSCC 2014, 45 nm; not a measurement of "
        "silicon")

#: Counts :func:`estimate` needs: counters, then program structure.
COUNT_KEYS = ("array_cycles", "dma_read_bytes", "dma_write_bytes", "act_load_bytes",
              "param_load_bytes", "weight_bytes", "store_rows", "store_buf_rows", "stores")

_NUMBER_KEYS = ("mac_multiply_pj", "mac_add_pj", "requant_multiply_pj", "requant_add_pj",
                "dram_pj_per_64bit_access")


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"energy constant {name} must be a non-negative number, "
                         f"not {value!r}")
    return float(value)


def _check_constants(raw, origin):
    if not isinstance(raw, dict):
        raise ValueError(f"energy constants ({origin}) must be a JSON object, not {raw!r}")
    missing = [k for k in (*_NUMBER_KEYS, "sram_pj_per_64bit_access") if k not in raw]
    if missing:
        raise ValueError(f"energy constants ({origin}) lack {', '.join(missing)}")
    out = {"source": str(raw.get("source", origin)), "origin": origin}
    for key in _NUMBER_KEYS:
        out[key] = _number(key, raw[key])
    table = raw["sram_pj_per_64bit_access"]
    if not isinstance(table, list) or not table:
        raise ValueError("energy constant sram_pj_per_64bit_access must be a non-empty list "
                         f"of [bytes, pJ] pairs, not {table!r}")
    points = []
    for pair in table:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError("energy constant sram_pj_per_64bit_access must be a non-empty "
                             f"list of [bytes, pJ] pairs, not {table!r}")
        size, pj = pair
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise ValueError(f"SRAM size must be a positive integer, not {size!r}")
        points.append((size, _number("sram_pj_per_64bit_access", pj)))
    for (s0, e0), (s1, e1) in zip(points, points[1:]):
        if s1 <= s0 or e1 < e0:
            raise ValueError("sram_pj_per_64bit_access must grow in size and not fall in "
                             f"energy, not {table!r}")
    out["sram_pj_per_64bit_access"] = points
    host = raw.get("host_round_trip_j")
    out["host_round_trip_j"] = None if host is None else _number("host_round_trip_j", host)
    return out


def load_constants(constants=None):
    """The energy constants: ``None`` (the default file), a path to a JSON file, or a dict
    of the same keys. Returns a checked dict (``ValueError`` on a bad value)."""
    if constants is None:
        constants = DEFAULT_CONSTANTS_PATH
    if isinstance(constants, dict):              # checking a checked dict is a no-op
        return _check_constants(constants, constants.get("origin", "dict"))
    path = Path(constants)
    try:
        raw = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read energy constants {str(path)!r}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"energy constants {str(path)!r} are not JSON: {e}") from None
    return _check_constants(raw, str(path))


def sram_pj_per_byte(size_bytes, constants=None):
    """Energy of one byte read or written in an SRAM of ``size_bytes``, in pJ.

    The 64-bit access energy of the table, interpolated linearly in ``log2(size)``
    between neighbouring table points, held at the end values outside, divided by 8.
    """
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes <= 0:
        raise ValueError(f"size_bytes must be a positive integer, not {size_bytes!r}")
    points = load_constants(constants)["sram_pj_per_64bit_access"]
    if size_bytes <= points[0][0]:
        return points[0][1] / 8
    if size_bytes >= points[-1][0]:
        return points[-1][1] / 8
    x = math.log2(size_bytes)
    for (s0, e0), (s1, e1) in zip(points, points[1:]):
        if size_bytes <= s1:
            x0, x1 = math.log2(s0), math.log2(s1)
            return (e0 + (e1 - e0) * (x - x0) / (x1 - x0)) / 8
    raise AssertionError("unreachable")


def buffer_sizes(cfg):
    """Bytes of each on-chip buffer the model charges, from the configuration."""
    return {
        "act_buf": cfg.act_buf_bytes,
        "accumulator": cfg.acc_buf_bytes,
        "weight_fifo": cfg.weight_fifo_rows * cfg.cols * cfg.act_width // 8,
        "param_buf": cfg.param_tiles * isa.PARAM_BEATS * cfg.bus_bytes,
    }


def program_counts(cfg, programs):
    """Structure counts of ``programs`` (each a :class:`sw.isa_model.Program`, bytes, or a
    decoded list), summed: what each instruction moves by its definition in :mod:`hw.isa`.

    Returns ``act_load_bytes``, ``param_load_bytes``, ``weight_bytes`` (in each
    ``MATMUL``'s format), ``store_rows``, ``store_raw_rows`` (the rows of raw ``STORE``
    instructions, among ``store_rows``), ``block_rows`` (array rows of block-format
    ``MATMUL``s), ``store_buf_rows``, ``stores``, ``matmuls``, ``insn_bytes``, and what the counters
    should then read: ``array_rows`` (``m * k_tiles`` per ``MATMUL``),
    ``expected_dma_read_bytes`` (instructions + loads + weights) and
    ``expected_dma_write_bytes`` (``STORE`` rows to memory).
    """
    C, bus = cfg.cols, cfg.bus_bytes
    out = dict.fromkeys(("act_load_bytes", "param_load_bytes", "weight_bytes", "store_rows",
                         "store_raw_rows", "block_rows",
                         "store_buf_rows", "stores", "matmuls", "insn_bytes", "array_rows",
                         "store_dram_bytes"), 0)
    for program in programs:
        for op, _hdr, b in decode_program(program):
            out["insn_bytes"] += isa.INSN_BYTES
            if op == isa.Op.LOAD_ACT:
                out["act_load_bytes"] += b["rows"] * b["row_beats"] * bus
            elif op == isa.Op.LOAD_PARAM:
                out["param_load_bytes"] += b["n_tiles"] * isa.PARAM_BEATS * bus
            elif op == isa.Op.MATMUL:
                out["matmuls"] += 1
                out["weight_bytes"] += weight_bytes(cfg, b)
                out["array_rows"] += b["m"] * b["k_tiles"]
                if b["wfmt"] in isa.BLOCK_FORMATS:
                    out["block_rows"] += b["m"] * b["k_tiles"]
            elif op == isa.Op.STORE:
                out["stores"] += 1
                out["store_rows"] += b["m"]
                out["store_raw_rows"] += b["m"] if b["raw"] else 0
                if b["to_buf"]:
                    out["store_buf_rows"] += b["m"]
                else:
                    out["store_dram_bytes"] += b["m"] * C * (cfg.raw_row_beats if b["raw"]
                                                             else 1)
    out["expected_dma_read_bytes"] = (out["insn_bytes"] + out["act_load_bytes"]
                                      + out["param_load_bytes"] + out["weight_bytes"])
    out["expected_dma_write_bytes"] = out.pop("store_dram_bytes")
    return out


def counter_mismatches(structure, counters):
    """Where the program structure and the hardware counters disagree: a list of
    ``"name: structure X, counter Y"`` strings (empty when they agree)."""
    pairs = (("array_rows", "array_cycles"), ("expected_dma_read_bytes", "dma_read_bytes"),
             ("expected_dma_write_bytes", "dma_write_bytes"))
    return [f"{c}: program structure {structure[s]}, counter {counters[c]}"
            for s, c in pairs if structure[s] != counters[c]]


def _count(counts, key, default=None):
    value = counts[key] if default is None else counts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"count {key} must be a non-negative integer, not {value!r}")
    return value


def estimate(cfg, counts, constants=None):
    """Energy estimate of a run from its ``counts`` (see :data:`COUNT_KEYS`; optional
    ``tokens``, ``host_round_trips``, ``store_raw_rows``, ``block_rows``). ``constants``:
    ``None``, a JSON path or a dict (:func:`load_constants`).

    Returns a dict: ``total_j``, ``mac_j``, ``requant_j``, ``scale_j``, ``sram_j``,
    ``dram_j`` (and
    ``host_j`` when the constants price a round trip), ``sram`` per buffer (size, pJ per
    byte, bytes read and written, joules), ``events`` (the event counts used),
    ``pj_per_event``, ``host_round_trips`` (beside the energy unless priced), ``tokens``
    and ``joules_per_token`` when ``tokens`` is given, ``note`` and ``constants`` (source).
    """
    k = load_constants(constants)
    missing = [key for key in COUNT_KEYS if key not in counts]
    if missing:
        raise ValueError(f"energy estimate needs counts of {', '.join(missing)}")
    c = {key: _count(counts, key) for key in COUNT_KEYS}
    R, C = cfg.rows, cfg.cols
    acc_row = C * cfg.acc_width // 8
    macs = c["array_cycles"] * R * C
    requant_elems = (c["store_rows"] - _count(counts, "store_raw_rows", 0)) * C
    scale_elems = _count(counts, "block_rows", 0) * C
    dram_bytes = c["dma_read_bytes"] + c["dma_write_bytes"]
    traffic = {
        "act_buf": (c["array_cycles"] * R, c["act_load_bytes"] + c["store_buf_rows"] * R),
        "accumulator": ((c["array_cycles"] + c["store_rows"]) * acc_row,
                        c["array_cycles"] * acc_row),
        "weight_fifo": (c["weight_bytes"], c["weight_bytes"]),
        "param_buf": (c["stores"] * isa.PARAM_BEATS * cfg.bus_bytes, c["param_load_bytes"]),
    }
    pj_mac = k["mac_multiply_pj"] + k["mac_add_pj"]
    pj_requant = k["requant_multiply_pj"] + k["requant_add_pj"]
    pj_scale = 2 * pj_requant
    pj_dram = k["dram_pj_per_64bit_access"] / 8
    sram = {}
    for name, size in buffer_sizes(cfg).items():
        rd, wr = traffic[name]
        pj = sram_pj_per_byte(size, k)
        sram[name] = {"bytes": size, "pj_per_byte": pj, "read_bytes": rd, "write_bytes": wr,
                      "j": (rd + wr) * pj * 1e-12}
    out = {
        "mac_j": macs * pj_mac * 1e-12,
        "requant_j": requant_elems * pj_requant * 1e-12,
        "scale_j": scale_elems * pj_scale * 1e-12,
        "sram_j": sum(b["j"] for b in sram.values()),
        "dram_j": dram_bytes * pj_dram * 1e-12,
    }
    trips = counts.get("host_round_trips")
    if k["host_round_trip_j"] is not None:
        if trips is None:
            raise ValueError("the constants price host round trips: counts need "
                             "host_round_trips")
        out["host_j"] = _count(counts, "host_round_trips") * k["host_round_trip_j"]
    out["total_j"] = sum(out.values())
    out = {"total_j": out.pop("total_j"), **out}
    out.update({
        "sram": sram,
        "events": {"macs": macs, "requant_elements": requant_elems,
                   "scale_elements": scale_elems, "dram_bytes": dram_bytes,
                   "sram_read_bytes": sum(t[0] for t in traffic.values()),
                   "sram_write_bytes": sum(t[1] for t in traffic.values()), **c},
        "pj_per_event": {"mac": pj_mac, "requant_element": pj_requant,
                         "scale_element": pj_scale,
                         "dram_byte": pj_dram},
        "host_round_trips": trips,
        "host_round_trips_in_total": k["host_round_trip_j"] is not None,
        "note": NOTE,
        "constants": k["source"],
    })
    tokens = counts.get("tokens")
    if tokens is not None:
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
            raise ValueError(f"tokens must be a positive integer, not {tokens!r}")
        out["tokens"] = tokens
        out["joules_per_token"] = out["total_j"] / tokens
    return out


@functools.lru_cache(maxsize=4096)
def _one_program_counts(cfg, program):
    """:func:`program_counts` of one program's bytes (every decoded token runs the same
    programs again: each is decoded once)."""
    return program_counts(cfg, [program])


def calls_estimate(cfg, calls, tokens=None, constants=None):
    """:func:`estimate` of a list of device calls (:class:`sw.runtime.CallStats` with
    their programs and counters: a timed backend's), over ``tokens`` tokens if given."""
    counts = {}
    for c in calls:
        for key, value in _one_program_counts(cfg, c.program).items():
            counts[key] = counts.get(key, 0) + value
    counts.update(array_cycles=sum(c.counters["array_cycles"] for c in calls),
                  dma_read_bytes=sum(c.counters["dma_read_bytes"] for c in calls),
                  dma_write_bytes=sum(c.counters["dma_write_bytes"] for c in calls),
                  host_round_trips=len(calls))
    if tokens is not None:
        counts["tokens"] = tokens
    return estimate(cfg, counts, constants)
