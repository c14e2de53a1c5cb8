"""The device interface: every backend behind one protocol, the fast simulator's cycle
counts against the cocotb runs, and the runtime's errors, resets and watchdog."""

import numpy as np
import pytest

from serrano.hw import isa, regs
from serrano.hw.config import get_preset
from serrano.sim.system import MEMORY_CLASSES, run_system
from serrano.sw import compiler, gemm as G, golden, isa_model
from serrano.sw.backends import BACKENDS, Backend, available, backend_names, open_backend
from serrano.sw.isa_model import Program
from serrano.sw.run import run_model_on
from serrano.sw.runtime import Device, DeviceError
from tests.conftest import require_backend, require_simulator

TINY = get_preset("tiny")
MEM = 1 << 20                   # device memory of these tests


def _gemm(dev, m, k, n, seed):
    """Put one random requantized GEMM into ``dev``; return (builder, y_addr, expect)."""
    cfg = dev.cfg
    a, w = G.random_operands(m, k, n, seed)
    acc = golden.matmul(a, w)
    bias, mult, shift = G.random_requant(acc, seed)
    from serrano.sw import requant
    expect = requant.requantize(acc, bias, mult, shift)
    w_addr = dev.put(isa_model.pack_weights(w, cfg))
    a_addr = dev.put(compiler.pack_acts(a, cfg))
    p_addr = dev.put(isa_model.pack_params(bias, mult, shift, cfg))
    y_bytes = -(-n // cfg.cols) * m * cfg.cols
    y_addr = dev.alloc(y_bytes)
    b = dev.builder()
    b.gemm(compiler.Gemm(m, k, n, a_addr, w_addr, p_addr, y_addr))
    return b, (y_addr, y_bytes, m, n), expect


def _out(dev, where):
    y_addr, y_bytes, m, n = where
    return compiler.unpack_out(dev.read(y_addr, y_bytes), m, n, dev.cfg)


SHAPES = ((5, 9, 7), (8, 16, 12), (1, 20, 4))


def test_registry_and_protocol():
    assert backend_names() == ("golden", "verilator", "icarus", "amaranth")
    for name, cls in BACKENDS.items():
        assert cls.name == name
        for method in ("write_mem", "read_mem", "write_reg", "read_reg", "wait_irq",
                       "reset", "close"):
            assert callable(getattr(cls, method)), (name, method)
    with pytest.raises(ValueError, match="unknown backend 'board'; choose one of: golden"):
        open_backend("board", TINY)
    with pytest.raises(ValueError, match="mem_bytes must be a positive multiple of 4"):
        open_backend("golden", TINY, mem_bytes=10)


def test_every_backend_same_memory(backend):
    """The same calls on one device per backend: identical device memory at the end,
    outputs equal to numpy, and the magic register readable through the protocol."""
    images = {}
    for name in ("golden", backend):
        with Device(TINY, name, mem_bytes=MEM, check="none") as dev:
            assert isinstance(dev.backend, Backend)
            assert dev.backend.read_reg("magic") == regs.MAGIC
            for i, shape in enumerate(SHAPES):
                b, where, expect = _gemm(dev, *shape, seed=i)
                st = dev.call(f"g{i}", b)
                np.testing.assert_array_equal(_out(dev, where), expect)
                assert (st.cycles is None) == (name == "golden")
            images[name] = dev.snapshot()
    np.testing.assert_array_equal(images[backend], images["golden"])


@pytest.mark.parametrize("model", ["bert-tiny", "gpt-tiny"])
def test_layers_on_amaranth(model):
    """Whole layers on Amaranth's simulator (with its per-cycle monitors), each call
    checked byte for byte against the golden model; the same outputs as golden."""
    r, dev = run_model_on(TINY, model, "amaranth", seq=4, check="every", host_ops=True)
    dev.close()
    g, gdev = run_model_on(TINY, model, "golden", seq=4, host_ops=True)
    gdev.close()
    assert r["bit_exact_vs_golden"] is True
    assert r["cosine_vs_float"] == g["cosine_vs_float"]
    assert r["cycles"] > 0 and r["host_round_trips"] == g["host_round_trips"]


@pytest.mark.parametrize("latency", [1, 30])
@pytest.mark.parametrize("shape", [(5, 9, 7), (24, 40, 20)])
def test_fast_harness_cycles_equal_cocotb(simulator, shape, latency):
    """The fast simulator's memory model is sim/hdl/axi_mem.v cycle for cycle: the same
    program at the same latency gives the same counters and memory as the cocotb run of
    serrano_system (under each simulator)."""
    require_simulator("verilator")
    m, k, n = shape
    a, w = G.random_operands(m, k, n, 3)
    acc = golden.matmul(a, w)
    lay = compiler.compile_gemm(TINY, a, w, *G.random_requant(acc, 3))
    ref = run_system(TINY, lay.image, lay.prog_addr, lay.prog_len, simulator,
                     mem_latency=latency)
    be = open_backend("verilator", TINY, mem_bytes=MEM, mem_latency=latency)
    be.write_mem(0, lay.image)
    out = regs.drive(regs.run_program(lay.prog_addr, lay.prog_len, 0, len(lay.image),
                                      1_000_000),
                     write=be.write_reg, read=be.read_reg, wait_irq=be.wait_irq)
    assert out.status == ref.status == regs.STATUS_DONE
    assert out.counters == ref.counters
    np.testing.assert_array_equal(be.read_mem(0, len(lay.image)), ref.image)
    be.close()


def test_fast_harness_bus_errors_equal_cocotb(simulator):
    """SLVERR from the error window and DECERR beyond the memory end the program with
    the same status, counters and memory as the Verilog memory model."""
    require_simulator("verilator")
    a, w = G.random_operands(8, 16, 8, 4)
    lay = compiler.compile_gemm(TINY, a, w, *G.random_requant(golden.matmul(a, w), 4))
    size = MEMORY_CLASSES[0]          # the Verilog memory's size: DECERR beyond it
    for window, limit, code in (((lay.w_addr, lay.w_addr + 4), size, isa.Error.AXI_SLVERR),
                                ((lay.y_addr, lay.y_addr + 4), size, isa.Error.AXI_SLVERR),
                                ((0, 0), size + 4096, isa.Error.AXI_DECERR)):
        image = lay.image
        if code == isa.Error.AXI_DECERR:     # weights moved past the memory's end
            image = lay.image.copy()
            prog = Program()
            prog.matmul(weight_addr=size, act_row=0, act_stride=1, act_kstep=1, m=1,
                        k_tiles=1, acc_row=0)
            prog.end()
            image[lay.prog_addr:lay.prog_addr + 64] = np.frombuffer(bytes(prog), np.uint8)
        n_insns = 2 if code == isa.Error.AXI_DECERR else lay.prog_len
        ref = run_system(TINY, image, lay.prog_addr, n_insns, simulator, limit=limit,
                         err_window=window, memory_bytes=size)
        be = open_backend("verilator", TINY, mem_bytes=size)
        be.sim.set_err_window(*window)
        be.write_mem(0, image)
        out = regs.drive(regs.run_program(lay.prog_addr, n_insns, 0, limit, 1_000_000),
                         write=be.write_reg, read=be.read_reg, wait_irq=be.wait_irq)
        assert out.error_code == (ref.status >> regs.STATUS_CODE_SHIFT) & 0xF == code
        assert out.counters == ref.counters
        np.testing.assert_array_equal(be.read_mem(0, len(image)), ref.image)
        be.close()


def _program(*build):
    p = Program()
    for step in build:
        step(p)
    p.end()
    return np.frombuffer(bytes(p), np.uint8)


def _error_programs(cfg):
    """One program per error code the accelerator reports (the window is [0, top))."""
    bad_opcode = bytearray(isa.INSN_BYTES)
    bad_opcode[0] = 0xF
    return {
        isa.Error.BAD_OPCODE: lambda top: np.frombuffer(bytes(bad_opcode) * 2, np.uint8),
        isa.Error.BAD_COUNT: lambda top: _program(lambda p: p.matmul(
            weight_addr=0, act_row=0, act_stride=1, act_kstep=1, m=0, k_tiles=1,
            acc_row=0)),
        isa.Error.BAD_BUFFER: lambda top: _program(lambda p: p.matmul(
            weight_addr=0, act_row=cfg.act_buf_rows, act_stride=1, act_kstep=1, m=1,
            k_tiles=1, acc_row=0)),
        isa.Error.DMA_WINDOW: lambda top: _program(lambda p: p.matmul(
            weight_addr=top + 4096, act_row=0, act_stride=1, act_kstep=1, m=1, k_tiles=1,
            acc_row=0)),
        isa.Error.DMA_ALIGN: lambda top: _program(lambda p: p.matmul(
            weight_addr=cfg.bus_bytes + 1, act_row=0, act_stride=1, act_kstep=1, m=1,
            k_tiles=1, acc_row=0)),
        isa.Error.NO_END: lambda top: _program(lambda p: p.fence())[:isa.INSN_BYTES],
    }


def test_device_errors_soft_reset_and_next_call(backend):
    """On one device: every program error code is reported as a DeviceError naming it,
    the device is soft-reset, and the next call is correct."""
    with Device(TINY, backend, mem_bytes=MEM) as dev:
        dev.alloc(4096)
        for code, make in _error_programs(TINY).items():
            prog = make(dev.mark() + 8192)
            addr = dev.put(prog)
            with pytest.raises(DeviceError, match=code.name):
                dev.run(addr, len(prog) // isa.INSN_BYTES, name=code.name)
            assert not dev.busy
            b, where, expect = _gemm(dev, 4, 8, 4, seed=int(code))
            dev.call("after " + code.name, b)
            np.testing.assert_array_equal(_out(dev, where), expect)
        if dev.check == "every":
            assert dev.bit_exact is True


def test_bus_errors_on_a_running_device():
    """SLVERR and DECERR on the persistent simulator: reported, and the next call on the
    same simulator is correct."""
    require_simulator("verilator")
    with Device(TINY, "verilator", mem_bytes=MEM, check="none") as dev:
        b, where, expect = _gemm(dev, 4, 8, 4, seed=1)
        dev.backend.sim.set_err_window(where[0], where[0] + 4)
        with pytest.raises(DeviceError, match="AXI_SLVERR"):
            dev.call("slverr", b)
        dev.backend.sim.set_err_window(0, 0)
        b, where, expect = _gemm(dev, 4, 8, 4, seed=2)
        dev.call("ok", b)
        np.testing.assert_array_equal(_out(dev, where), expect)
        # DECERR: a window beyond the memory (the Device never sets one; the registers can)
        be = dev.backend
        prog = _program(lambda p: p.matmul(weight_addr=MEM, act_row=0, act_stride=1,
                                           act_kstep=1, m=1, k_tiles=1, acc_row=0))
        addr = dev.put(prog)
        out = regs.drive(regs.run_program(addr, 2, 0, MEM + 4096, 100_000),
                         write=be.write_reg, read=be.read_reg, wait_irq=be.wait_irq)
        assert out.error_code == isa.Error.AXI_DECERR
        dev.soft_reset()
        b, where, expect = _gemm(dev, 4, 8, 4, seed=3)
        dev.call("ok again", b)
        np.testing.assert_array_equal(_out(dev, where), expect)


@pytest.mark.parametrize("backend", [b for b in backend_names() if b != "golden"])
def test_watchdog_ends_a_hung_program(backend):
    """A program that waits for a token nobody gives never ends (``END`` waits for the
    MATMUL stuck on its token): the call ends at the watchdog with a clear error, the
    device is soft-reset and takes the next call. (The ISA model runs in program order,
    where a token wait cannot hang.)"""
    require_backend(backend)
    with Device(TINY, backend, mem_bytes=MEM, check="none", timeout_cycles=3000) as dev:
        w = dev.put(np.zeros(TINY.rows * TINY.cols, np.uint8))
        prog = _program(lambda p: p.matmul(weight_addr=w, act_row=0, act_stride=1,
                                           act_kstep=1, m=1, k_tiles=1, acc_row=0,
                                           pop_prev=1))
        addr = dev.put(prog)
        with pytest.raises(DeviceError,
                           match="WATCHDOG: watchdog: no interrupt within 3,000 cycles"):
            dev.run(addr, 2, name="hung")
        assert not dev.busy
        b, where, expect = _gemm(dev, 4, 8, 4, seed=5)
        dev.call("after the hang", b)
        np.testing.assert_array_equal(_out(dev, where), expect)


def test_bad_input_is_refused_and_nothing_written():
    with Device(TINY, "golden", mem_bytes=MEM) as dev:
        addr = dev.put(np.arange(64, dtype=np.uint8))
        before = dev.snapshot()
        for args, message in (((MEM - 8, np.ones(16, np.uint8)), "outside device memory"),
                              ((-4, np.ones(4, np.uint8)), "outside device memory")):
            with pytest.raises(ValueError, match=message):
                dev.write(*args)
        with pytest.raises(ValueError, match="outside device memory"):
            dev.read(MEM - 4, 8)
        with pytest.raises(ValueError, match="not a multiple of"):
            dev.run(addr + 2, 1)
        with pytest.raises(ValueError, match="at least one instruction"):
            dev.run(addr, 0)
        with pytest.raises(ValueError, match="no program is running"):
            dev.wait()
        np.testing.assert_array_equal(dev.snapshot(), before)
        assert dev.bytes_to_device == 64
        with pytest.raises(MemoryError, match="device memory full"):
            dev.alloc(MEM)


def test_busy_device_refuses_a_second_program():
    require_simulator("verilator")
    with Device(TINY, "verilator", mem_bytes=MEM, check="every") as dev:
        b, where, expect = _gemm(dev, 8, 16, 8, seed=6)
        prog = np.frombuffer(b.finish(), np.uint8)
        addr = dev.put(prog)
        dev.launch(addr, len(prog) // isa.INSN_BYTES)
        before = dev.backend.read_mem(0, dev.mark())
        with pytest.raises(ValueError, match="the device is running a program"):
            dev.launch(addr, 1)
        with pytest.raises(ValueError, match="the device is running a program"):
            dev.write(where[0], np.ones(4, np.uint8))
        np.testing.assert_array_equal(dev.backend.read_mem(0, dev.mark()), before)
        st = dev.wait()
        assert st.cycles > 0 and st.bit_exact is True
        np.testing.assert_array_equal(_out(dev, where), expect)


def test_check_every_catches_a_difference():
    """The golden check is not vacuous: a device memory that differs from the golden
    model's after a call makes ``bit_exact`` false."""
    require_simulator("verilator")
    with Device(TINY, "verilator", mem_bytes=MEM, check="every") as dev:
        b, where, _ = _gemm(dev, 4, 8, 4, seed=7)
        dev.call("same", b)
        assert dev.bit_exact is True
        b, where, _ = _gemm(dev, 4, 8, 4, seed=8)
        dev.golden.write_mem(where[0] - 64, np.full(4, 0xAB, np.uint8))   # the shadow only
        st = dev.call("differs", b)
        assert st.bit_exact is False and dev.bit_exact is False


def test_written_pages_of_the_simulator_and_the_golden_model():
    """Both backends name the pages a program's stores wrote, the same ones, and never
    the host's own writes."""
    require_simulator("verilator")
    with Device(TINY, "verilator", mem_bytes=MEM, check="none") as dev:
        page = dev.backend.page_bytes
        gold = open_backend("golden", TINY, mem_bytes=MEM)
        gold.track_writes = True
        dev.alloc(3 * page + 100)                  # the output starts inside a page
        b, (y_addr, y_bytes, _, _), expect = _gemm(dev, 9, 8, 12, seed=11)
        prog = np.frombuffer(b.finish(), np.uint8)
        addr = dev.put(prog)
        gold.write_mem(0, dev.backend.view_mem(0, dev.mark()))
        assert len(dev.backend.take_written_pages(page)) == 0     # host writes: none
        assert len(gold.take_written_pages(page)) == 0
        dev.run(addr, len(prog) // isa.INSN_BYTES)
        regs.drive(regs.run_program(addr, len(prog) // isa.INSN_BYTES, 0, dev.mark(), 1),
                   write=gold.write_reg, read=gold.read_reg, wait_irq=gold.wait_irq)
        want = np.arange(y_addr // page, (y_addr + y_bytes - 1) // page + 1)
        np.testing.assert_array_equal(dev.backend.take_written_pages(page), want)
        np.testing.assert_array_equal(gold.take_written_pages(page), want)
        assert len(dev.backend.take_written_pages(page)) == 0     # taken: forgotten
        np.testing.assert_array_equal(dev.backend.take_written_pages(2 * page),
                                      np.zeros(0))
        with pytest.raises(ValueError, match="not whole pages"):
            dev.backend.take_written_pages(page // 2)
        np.testing.assert_array_equal(_out(dev, (y_addr, y_bytes, 9, 12)), expect)


def test_check_on_written_pages_and_once_on_everything():
    """A checked call compares the pages either side wrote (a difference beside its
    output, in a page it wrote, is caught by the call); a difference elsewhere is caught
    by ``bit_exact``'s comparison of everything allocated, and from then on the calls
    compare everything."""
    require_simulator("verilator")
    with Device(TINY, "verilator", mem_bytes=MEM, check="every") as dev:
        b, where, _ = _gemm(dev, 4, 8, 4, seed=12)
        beside = where[0] + where[1]
        page = dev.backend.page_bytes
        assert beside // page == (beside - 1) // page      # in the output's last page
        dev.golden.write_mem(beside, np.full(1, 0xAB, np.uint8))
        assert dev.call("beside", b).bit_exact is False
    with Device(TINY, "verilator", mem_bytes=MEM, check="every") as dev:
        far = dev.put(np.zeros(8192, np.uint8))
        b, where, _ = _gemm(dev, 4, 8, 4, seed=13)
        dev.golden.write_mem(far, np.full(1, 0xAB, np.uint8))
        assert dev.call("elsewhere", b).bit_exact is True
        assert dev.bit_exact is False
        b, where, _ = _gemm(dev, 4, 8, 4, seed=14)
        assert dev.call("after", b).bit_exact is False


def test_many_calls_on_one_simulator():
    """A running device keeps its memory across calls: weights written once, many
    calls, every output right; host bytes counted once."""
    require_simulator("verilator")
    with Device(TINY, "verilator", mem_bytes=MEM) as dev:
        cfg = dev.cfg
        a, w = G.random_operands(6, 12, 8, 9)
        acc = golden.matmul(a, w)
        bias, mult, shift = G.random_requant(acc, 9)
        w_addr = dev.put(isa_model.pack_weights(w, cfg))
        p_addr = dev.put(isa_model.pack_params(bias, mult, shift, cfg))
        sent = dev.bytes_to_device
        for i in range(20):
            mark = dev.mark()
            a_i = np.roll(a, i, axis=0)
            from serrano.sw import requant
            expect = requant.requantize(golden.matmul(a_i, w), bias, mult, shift)
            a_addr = dev.put(compiler.pack_acts(a_i, cfg))
            y_addr = dev.alloc(6 * 8)
            b = dev.builder()
            b.gemm(compiler.Gemm(6, 12, 8, a_addr, w_addr, p_addr, y_addr))
            dev.call(f"call {i}", b)
            np.testing.assert_array_equal(
                compiler.unpack_out(dev.read(y_addr, 48), 6, 8, cfg), expect)
            dev.release(mark)
        assert dev.host_round_trips == 20 and dev.bit_exact is True
        assert dev.bytes_to_device > sent


def test_available_names_a_missing_tool():
    ok, why = available("golden")
    assert ok and why == ""
    with pytest.raises(ValueError, match="unknown backend"):
        available("board")


def test_waveform_of_a_run(tmp_path):
    """``waveform=`` writes a VCD file of every signal; the traced model takes the same
    cycles."""
    require_simulator("verilator")
    fst = tmp_path / "run.vcd"
    cycles = []
    for waveform in (None, fst):
        with Device(TINY, "verilator", mem_bytes=MEM, waveform=waveform) as dev:
            b, where, expect = _gemm(dev, 4, 8, 4, seed=11)
            cycles.append(dev.call("g", b).cycles)
            np.testing.assert_array_equal(_out(dev, where), expect)
    assert cycles[0] == cycles[1]
    text = fst.read_text(errors="replace")
    assert "$enddefinitions" in text and "m_axi__arvalid" in text
    assert text.count("\n#") > 2 * cycles[0]               # a time stamp per half cycle
    with pytest.raises(ValueError, match="waveform= is for the verilator backend"):
        Device(TINY, "golden", waveform=fst)


def test_verilator_backend_runs_a_profile_guided_build():
    """The library behind the ``verilator`` backend was compiled from a profile: the
    training run's record is in its build log and its profile files beside its objects."""
    require_simulator("verilator")
    from serrano.sw.backends import VerilatorBackend, verilator_library
    lib = verilator_library(TINY)
    log = (lib.parents[1] / "build.log").read_text()
    assert "training:" in log and "serrano.sw.pgo" in log
    assert "-fprofile-use" in log.split("training:")[1]      # the final compile reads it
    assert list(lib.parent.glob("*.gcda"))
    be = VerilatorBackend(TINY, mem_bytes=MEM)
    try:
        assert be.sim.path == lib
    finally:
        be.close()


def test_a_failing_training_run_is_a_build_error():
    """A profile-guided build whose training command fails stops with the command's
    output, and leaves no library behind."""
    require_simulator("verilator")
    from serrano.sim.fastsim import FastSimError, build
    bad = ("-c", "import sys; print('no programs ran'); sys.exit(3)")
    with pytest.raises(FastSimError, match=r"training run .* failed \(exit 3\)"):
        build(TINY, train=bad)
    with pytest.raises(FastSimError, match="no programs ran"):
        build(TINY, train=bad)
