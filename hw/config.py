"""The one source of truth for serrano's geometry.

Every number that hardware, simulation, driver and tests must agree on lives here: the
systolic array's rows ``R`` and columns ``C``, the on-chip buffer depths, the AXI bus
width. ``hw/`` builds from a :class:`Config`, ``sim/`` generates and runs it, ``sw/``
tiles and quantizes for it, ``tests/`` check it. Nothing else repeats these numbers.

Presets
-------
``tiny``     4 x 4 array, 32-bit bus: fast unit tests on every simulator.
``fpga``     8 x 8 array, 64-bit bus: sized for an ECP5 LFE5U-85F's block RAM and DSPs.
``default`` 16 x 16 array (256 MACs, like Gemmini's and VTA's), 128-bit bus.
"""

from dataclasses import dataclass, asdict

__all__ = ["Config", "PRESETS", "get_preset", "preset_names", "ConfigError"]


class ConfigError(ValueError):
    """A configuration or preset name that serrano cannot build."""


@dataclass(frozen=True)
class Config:
    """Geometry of one serrano instance.

    Attributes
    ----------
    name : str
        Preset name, for messages and build directories.
    rows : int
        ``R``, the array's rows: the reduction (K) depth of one weight tile.
    cols : int
        ``C``, the array's columns: the output channels (N) of one weight tile.
    act_width : int
        Bits of one activation or weight element (int8).
    acc_width : int
        Bits of one accumulator / partial sum element (int32).
    act_buf_rows : int
        Depth of the activation buffer, in rows of ``R`` int8.
    acc_buf_rows : int
        Depth of each of the two accumulator banks, in rows of ``C`` int32.
    weight_fifo_rows : int
        Depth of the weight FIFO between the DMA and the array, in rows of ``C`` int8.
    param_tiles : int
        Requantization parameter sets held on chip, one per output tile of ``C``
        channels (bias, multiplier, shift).
    bus_bytes : int
        AXI4 data bus width in bytes. One beat carries one int8 weight row (``cols``
        bytes) or two rows of 4-bit codes.
    addr_width : int
        AXI4 address width in bits.
    weight_block : int
        Weights along K that share one scale in the block weight formats (``Q4`` and
        ``Q8``, ``sw/q4.py``): 32, as GGUF's Q4_0, Q4_1 and Q8_0 blocks. A multiple of
        ``R`` with ``weight_block / R`` a power of two.
    scale_width : int
        Bits of a block scale (unsigned) and of a ``Q4`` block offset (signed): 8.
    vec_tables : int
        Lookup tables of the vector unit (``VEC LUT``): 256 int8 entries each, one copy
        per lane (``R`` copies), so that a row looks up ``R`` elements in one cycle.
    scale_slots : int
        Block scale sets (one per block of one N-tile) the exec unit holds between the
        weight stream and the accumulator: enough to cover the array's latency, so
        that block-format decode never waits on them.
    mult_pipeline : int
        Pipeline registers inside each PE's multiplier, 0 or 1 (:class:`hw.dsp.Multiplier`):
        1 on the ``fpga`` preset, where it is the ECP5 DSP block's ``REG_PIPELINE`` (the
        multiply gets a cycle of its own), 0 elsewhere. Each adds a cycle to the array's
        latency, in simulation as on the FPGA.
    vec_pipeline : int
        The vector unit's pipeline, 0 or 1 (:class:`hw.vector_unit.VectorUnit`): 1 on the
        ``fpga`` preset, where every stage holds at most one carry chain, one variable
        shift or one multiplier (DSP blocks with their input and output registers), so
        that the unit keeps the clock the array reaches; 0 elsewhere, the shorter
        pipeline whose stages hold a multiply, an add and a rounding shift each. The
        same results; 1 adds cycles to each pass of a vector through the lanes.
    vec_div_steps : int
        Steps of the vector unit's divider and square root a cycle (1, 2, 3, 4 or 6: a
        divisor of the square root's 36): each a 58-bit add (divider) or a 40-bit
        compare and subtract (root), chained in one cycle. 1 on the ``fpga`` preset
        (72 cycles for a normalization's ``n 2**56 / V``), 4 elsewhere (18). The same
        results; fewer cycles a vector for softmax and the normalizations.
    vec_cache_rows : int
        Rows of the vector unit's two caches (:class:`hw.vector_unit.VectorUnit`): the
        b cache (a row's b reads, two rows of ``R`` bytes: an ``ADD`` or ``MUL`` whose b
        repeats and a normalization's gains read b from the buffer for the first vector
        only) and the low-half cache (``R`` bytes: a 16-bit reduction reads its low
        halves in its first pass only), for vectors of at most this many rows. 128 (an
        FFN's 1536-wide vector is 96 rows on ``default``; 6 KiB in all there); 0, no
        caches, on the ``fpga`` preset. The same results; fewer reads a row.
    """

    name: str
    rows: int
    cols: int
    act_buf_rows: int
    acc_buf_rows: int
    weight_fifo_rows: int
    bus_bytes: int
    param_tiles: int = 16
    weight_block: int = 32
    scale_slots: int = 4
    scale_width: int = 8
    vec_tables: int = 2
    act_width: int = 8
    acc_width: int = 32
    addr_width: int = 32
    mult_pipeline: int = 0
    vec_pipeline: int = 0
    vec_div_steps: int = 4
    vec_cache_rows: int = 128

    def __post_init__(self):
        for attr in ("rows", "cols", "act_buf_rows", "acc_buf_rows", "weight_fifo_rows",
                     "bus_bytes", "param_tiles", "addr_width", "weight_block", "scale_slots",
                     "vec_tables"):
            value = getattr(self, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{attr} must be a positive integer, not {value!r}")
        if self.mult_pipeline not in (0, 1) or isinstance(self.mult_pipeline, bool):
            raise ConfigError(f"mult_pipeline must be 0 or 1, not {self.mult_pipeline!r}")
        if self.vec_pipeline not in (0, 1) or isinstance(self.vec_pipeline, bool):
            raise ConfigError(f"vec_pipeline must be 0 or 1, not {self.vec_pipeline!r}")
        if (not isinstance(self.vec_cache_rows, int) or isinstance(self.vec_cache_rows, bool)
                or not (self.vec_cache_rows == 0 or self.vec_cache_rows >= 4)):
            raise ConfigError(f"vec_cache_rows must be 0 or at least 4, not "
                              f"{self.vec_cache_rows!r}")
        if self.vec_div_steps not in (1, 2, 3, 4, 6) or isinstance(self.vec_div_steps, bool):
            raise ConfigError(f"vec_div_steps must be 1, 2, 3, 4 or 6, not "
                              f"{self.vec_div_steps!r}")
        if self.act_width != 8 or self.acc_width != 32:
            raise ConfigError("serrano computes int8 x int8 into int32; "
                              f"act_width={self.act_width!r}, acc_width={self.acc_width!r}")
        if self.bus_bytes & (self.bus_bytes - 1):
            raise ConfigError(f"bus_bytes must be a power of two, not {self.bus_bytes!r}")
        if self.bus_bytes != self.cols or self.rows != self.cols:
            raise ConfigError("serrano moves one weight row (C bytes) and one activation row "
                              "(R bytes) per bus beat: rows, cols and bus_bytes must be equal, "
                              f"not {self.rows!r}, {self.cols!r}, {self.bus_bytes!r}")

        if self.vec_tables > 16:
            raise ConfigError(f"a VEC names its table in 4 bits: vec_tables must be at most "
                              f"16, not {self.vec_tables!r}")
        if self.scale_width != 8:
            raise ConfigError(f"block scales are bytes of the scale beats: scale_width must "
                              f"be 8, not {self.scale_width!r}")
        tiles = self.weight_block // self.rows
        if self.weight_block % self.rows or tiles & (tiles - 1):
            raise ConfigError(f"weight_block must be a power-of-two multiple of rows "
                              f"({self.rows}), not {self.weight_block!r}")
        if self.rows % 2:
            raise ConfigError(f"4-bit weights load two rows per beat: rows must be even, "
                              f"not {self.rows!r}")
        group = max(self.q4_group_beats, self.q8_scale_beats + self.q8_tile_beats)
        if self.weight_fifo_rows < group:
            raise ConfigError(f"weight_fifo_rows must hold a weight request of a block "
                              f"format ({group} beats), not {self.weight_fifo_rows!r}")

    # Derived quantities (never stored twice).

    @property
    def block_tiles(self):
        """K-tiles of ``R`` rows in one 4-bit block: ``weight_block / R``."""
        return self.weight_block // self.rows

    @property
    def q4_tile_beats(self):
        """Bus beats of one ``R x C`` tile of 4-bit codes: ``R * C / (2 * bus_bytes)``."""
        return self.rows * self.cols // (2 * self.bus_bytes)

    @property
    def q4_scale_beats(self):
        """Bus beats of one block's scales for ``C`` channels: ``C`` uint8 scales, then
        ``C`` int8 offsets."""
        return 2 * self.cols // self.bus_bytes

    @property
    def q4_group_beats(self):
        """Bus beats of one full 4-bit block of one N-tile: its scales, then its
        ``weight_block / R`` tiles of codes."""
        return self.q4_scale_beats + self.block_tiles * self.q4_tile_beats

    @property
    def q8_tile_beats(self):
        """Bus beats of one ``R x C`` tile of 8-bit codes: ``R`` (one row per beat)."""
        return self.rows * self.cols // self.bus_bytes

    @property
    def q8_scale_beats(self):
        """Bus beats of one block's scales for ``C`` channels in ``Q8``: ``C`` uint8."""
        return self.cols // self.bus_bytes

    @property
    def q8_group_beats(self):
        """Bus beats of one full ``Q8`` block of one N-tile: scales, then codes."""
        return self.q8_scale_beats + self.block_tiles * self.q8_tile_beats

    @property
    def scale_latency(self):
        """Cycles the exec unit's block scaler adds between the array's result and the
        accumulator, in every weight format (so the timing does not depend on it)."""
        return 5

    @property
    def macs(self):
        """Multiply-accumulate units in the array, ``R * C``."""
        return self.rows * self.cols

    @property
    def latency(self):
        """Cycles from an activation row entering the array to its result row leaving it.

        The bottom row's activation waits ``R - 1`` cycles of input skew and ``c`` cycles
        to reach column ``c`` (one input register per PE to the right); that PE's input,
        product and sum registers take 3 more (4 with ``mult_pipeline``; the sums above
        it arrive in step), and the output de-skew ``C - 1 - c``: ``R + C + 1`` in all,
        plus ``mult_pipeline``.
        """
        return self.rows + self.cols + 1 + self.mult_pipeline

    @property
    def raw_row_beats(self):
        """Bus beats of one accumulator row (``C`` int32) written as it is by a raw
        ``STORE``: ``C * acc_width / (8 * bus_bytes)``."""
        return self.cols * self.acc_width // (8 * self.bus_bytes)

    @property
    def act_buf_bytes(self):
        return self.act_buf_rows * self.rows * self.act_width // 8

    @property
    def acc_buf_bytes(self):
        """Bytes of both accumulator banks together."""
        return 2 * self.acc_buf_rows * self.cols * self.acc_width // 8

    @property
    def rowscale_slots(self):
        """Slots of the row-scale file (``VEC DYNQ`` writes a row's scale code, ``STORE
        rowscale`` reads it): two per accumulator row of one bank, so that one block's
        codes are read while the next block's are written."""
        return 2 * self.acc_buf_rows

    def to_dict(self):
        return asdict(self)


PRESETS = {
    "tiny": Config(name="tiny", rows=4, cols=4,
                   act_buf_rows=1024, acc_buf_rows=128, weight_fifo_rows=64,
                   bus_bytes=4, param_tiles=16),
    "fpga": Config(name="fpga", rows=8, cols=8,
                   act_buf_rows=8192, acc_buf_rows=256, weight_fifo_rows=64,
                   bus_bytes=8, param_tiles=64, mult_pipeline=1, vec_pipeline=1,
                   vec_div_steps=1, vec_cache_rows=0),
    "default": Config(name="default", rows=16, cols=16,
                      act_buf_rows=16384, acc_buf_rows=512, weight_fifo_rows=64,
                      bus_bytes=16, param_tiles=128),
    # Larger arrays for the scaling study (``serrano project``, README "At scale"): the
    # same buffer bytes as ``default``, a bus as wide as a weight row. Not for the FPGA.
    # At 64 rows a 4-bit block spans a whole K-tile: 64 weights per block, not GGUF's 32.
    # A longer array holds more block groups in flight: 8 scale sets, not 4 (with 4, x32's
    # 4-bit GEMVs kept the bus 80 % busy, waiting on them).
    "x32": Config(name="x32", rows=32, cols=32,
                  act_buf_rows=8192, acc_buf_rows=512, weight_fifo_rows=64,
                  bus_bytes=32, param_tiles=128, scale_slots=8),
    "x64": Config(name="x64", rows=64, cols=64,
                  act_buf_rows=4096, acc_buf_rows=512, weight_fifo_rows=128,
                  bus_bytes=64, param_tiles=128, weight_block=64, scale_slots=8),
}


def preset_names():
    return list(PRESETS)


def get_preset(name):
    """Return the :class:`Config` of preset ``name``, or raise :class:`ConfigError`."""
    if isinstance(name, Config):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of: "
                          f"{', '.join(PRESETS)}") from None
