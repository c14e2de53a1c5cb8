// serrano's fast simulation harness: the Verilated accelerator on a host-side AXI4 memory.
//
// Built by sim/fastsim.py into a shared library (one per design and configuration) and
// driven from Python through ctypes. One handle is one running accelerator ("a board"):
// its device memory is a host buffer that Python reads and writes in place (numpy view
// of srn_mem()), so the host moves only the bytes it touches. Every clock of a run
// happens here, in C++: no Python and no VPI per cycle.
//
// The memory model follows sim/hdl/axi_mem.v (serrano_axi_mem) cycle for cycle, so a
// program takes the same number of cycles here as in the cocotb runs on that model:
//   * read: up to 16 accepted ARs queue; an AR accepted in cycle t has its first beat
//     valid in cycle t + read_latency (0 taken as 1); beats follow one per cycle while
//     RREADY is high, bursts in order of acceptance;
//   * write: up to 8 AWs and 16 W beats queue independently; a beat is written at the
//     end of its handshake cycle if its AW is known and no older beat waits, otherwise
//     one queued beat per cycle once its AW is known; the B of a burst whose last W
//     handshake is in cycle t is valid from t + write_latency (0 taken as 1);
//   * errors: a burst starting in [err_lo, err_hi) answers SLVERR (a write changes
//     nothing); a beat beyond the memory answers DECERR (and is neither read nor
//     written); an unsupported AxSIZE / burst type or a wrong WLAST stops the run with
//     a message (srn_error);
//   * rst (srn_reset) empties the queues and restarts time; memory keeps its contents;
//   * every page (SRN_PAGE_BYTES) a write beat changes is marked in a byte map the host
//     reads and clears in place (srn_dirty): what the accelerator wrote, for the host's
//     check against a golden model (the host's own writes are not marked).
//
// Each clock: the memory's outputs are set from its registered state (it has no
// combinational path from its inputs, as in the Verilog), the model is evaluated with
// the clock low, handshakes are sampled, then the clock rises and the memory's state
// advances. Two evaluations per cycle.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "Vserrano_harness.h"
#include "verilated.h"
#ifdef SRN_TRACE
#include "verilated_vcd_c.h"
#endif

#ifndef BUS_BYTES
#error "BUS_BYTES must be defined (the AXI data width in bytes)"
#endif

// $finish, $stop and fatal errors of the Verilated model must not end the host process.
struct VerilogStop : std::runtime_error {
    using std::runtime_error::runtime_error;
};

void vl_finish(const char* filename, int linenum, const char*) {
    throw VerilogStop(std::string("$finish at ") + filename + ":" + std::to_string(linenum));
}
void vl_stop(const char* filename, int linenum, const char*) {
    throw VerilogStop(std::string("$stop at ") + filename + ":" + std::to_string(linenum));
}
void vl_fatal(const char* filename, int linenum, const char*, const char* msg) {
    throw VerilogStop(std::string("fatal at ") + filename + ":" + std::to_string(linenum)
                      + ": " + msg);
}

namespace {

constexpr uint32_t OKAY = 0, SLVERR = 2, DECERR = 3;
constexpr uint32_t INCR = 1;
constexpr int AR_DEPTH = 16, AW_DEPTH = 8, WQ_DEPTH = 16, B_DEPTH = 16;

constexpr uint32_t log2u(uint32_t v) { return v <= 1 ? 0 : 1 + log2u(v >> 1); }
constexpr uint32_t SIZE = log2u(BUS_BYTES);

template <typename T> void put_bytes(T& port, const uint8_t* src) {
    static_assert(sizeof(T) >= BUS_BYTES, "port narrower than the bus");
    std::memcpy(&port, src, BUS_BYTES);
}
template <typename T> void get_bytes(const T& port, uint8_t* dst) {
    std::memcpy(dst, &port, BUS_BYTES);
}
template <typename T> void zero_bytes(T& port) { std::memset(&port, 0, BUS_BYTES); }

struct ArEntry { uint32_t id; uint64_t word; uint32_t len; bool err; uint32_t due; };
struct AwEntry { uint32_t id; uint64_t word; uint32_t len; bool err; };
struct WEntry { uint8_t data[BUS_BYTES]; uint64_t strb; bool last; uint32_t stamp; };
struct BEntry { uint32_t id; uint32_t resp; uint32_t due; };

template <typename E, int N> struct Queue {
    E e[N];
    int head = 0, tail = 0, count = 0;
    void clear() { head = tail = count = 0; }
    bool full() const { return count == N; }
    bool empty() const { return count == 0; }
    E& front() { return e[head]; }
    E& push() { E& x = e[tail]; tail = (tail + 1) % N; return x; }  // count: caller
    void pop() { head = (head + 1) % N; }
};

// The AXI-Lite host port: one register access at a time.
struct Lite {
    bool active = false, is_write = false;
    bool addr_done = false, data_done = false, done = false;
    uint32_t addr = 0, wdata = 0, rdata = 0, resp = 0;
};

#define SRN_PAGE_SHIFT 12
#define SRN_PAGE_BYTES (1u << SRN_PAGE_SHIFT)

struct Sim {
    VerilatedContext* ctx = nullptr;
    Vserrano_harness* top = nullptr;
    uint8_t* mem = nullptr;
    uint8_t* dirty = nullptr;      // one byte per page of mem: 1 once a beat wrote it
    uint64_t mem_bytes = 0, words = 0;
    uint32_t rlat = 30, wlat = 10;
    uint64_t err_lo = 0, err_hi = 0;
    bool rst = false;
    // memory model state
    uint32_t now = 0;
    Queue<ArEntry, AR_DEPTH> arq;
    uint32_t r_beat = 0;
    Queue<AwEntry, AW_DEPTH> awq;
    Queue<WEntry, WQ_DEPTH> wq;
    Queue<BEntry, B_DEPTH> bq;
    uint32_t w_beat = 0;
    bool w_decerr = false;
    uint64_t read_beats = 0, write_beats = 0;
    // host side
    Lite lite;
    uint64_t cycle = 0;            // clocks since the handle was made
    std::string error;
#ifdef SRN_TRACE
    VerilatedVcdC* trace = nullptr;
#endif

    void dump(uint64_t t) {
#ifdef SRN_TRACE
        if (trace) trace->dump(t);
#else
        (void)t;
#endif
    }

    bool in_window(uint64_t addr) const { return addr >= err_lo && addr < err_hi; }
    uint64_t word_of(uint64_t addr) const { return addr >> SIZE; }

    void reset_model() {
        arq.clear(); awq.clear(); wq.clear(); bq.clear();
        r_beat = 0; w_beat = 0; w_decerr = false; now = 0;
        read_beats = write_beats = 0;
    }

    // Drive the memory's and the host's outputs into the model (clock low).
    void drive() {
        Vserrano_harness* t = top;
        t->rst = rst;
        t->ax_arready = !rst && !arq.full();
        t->ax_awready = !rst && !awq.full();
        t->ax_wready = !rst && !wq.full();
        // R channel
        bool rvalid = false;
        if (!arq.empty()) {
            ArEntry& a = arq.front();
            rvalid = (int32_t)(now - a.due) >= 0;
            uint64_t word = a.word + r_beat;
            bool inmem = word < words;
            t->ax_rid = a.id;
            t->ax_rlast = r_beat == a.len;
            t->ax_rresp = !inmem ? DECERR : (a.err ? SLVERR : OKAY);
            if (inmem && !a.err) put_bytes(t->ax_rdata, mem + word * BUS_BYTES);
            else zero_bytes(t->ax_rdata);
        } else {
            t->ax_rid = 0; t->ax_rlast = 0; t->ax_rresp = 0;
        }
        t->ax_rvalid = rvalid;
        // B channel
        bool bvalid = false;
        if (!bq.empty()) {
            BEntry& b = bq.front();
            bvalid = (int32_t)(now - b.due) >= 0;
            t->ax_bid = b.id;
            t->ax_bresp = b.resp;
        }
        t->ax_bvalid = bvalid;
        // AXI-Lite host
        t->lite_awaddr = lite.addr; t->lite_araddr = lite.addr;
        t->lite_awprot = 0; t->lite_arprot = 0;
        t->lite_wdata = lite.wdata; t->lite_wstrb = 0xF;
        bool busy = lite.active && !lite.done;
        t->lite_awvalid = busy && lite.is_write && !lite.addr_done;
        t->lite_wvalid = busy && lite.is_write && !lite.data_done;
        t->lite_bready = busy && lite.is_write;
        t->lite_arvalid = busy && !lite.is_write && !lite.addr_done;
        t->lite_rready = busy && !lite.is_write;
    }

    void fail(const std::string& msg) {
        if (error.empty()) error = msg;
    }

    // Sample handshakes (clock still low, model settled) and compute the memory's next
    // state; the clock edge follows.
    void sample_and_update() {
        Vserrano_harness* t = top;
        // host port
        if (lite.active && !lite.done) {
            if (lite.is_write) {
                if (t->lite_awvalid && t->lite_awready) lite.addr_done = true;
                if (t->lite_wvalid && t->lite_wready) lite.data_done = true;
                if (t->lite_bvalid && t->lite_bready) { lite.resp = t->lite_bresp; lite.done = true; }
            } else {
                if (t->lite_arvalid && t->lite_arready) lite.addr_done = true;
                if (t->lite_rvalid && t->lite_rready) {
                    lite.rdata = t->lite_rdata; lite.resp = t->lite_rresp; lite.done = true;
                }
            }
        }
        if (rst) { reset_model(); return; }

        bool ar_hs = t->ax_arvalid && t->ax_arready;
        bool r_hs = t->ax_rvalid && t->ax_rready;
        bool aw_hs = t->ax_awvalid && t->ax_awready;
        bool w_hs = t->ax_wvalid && t->ax_wready;
        bool b_hs = t->ax_bvalid && t->ax_bready;

        // ---- checks (the Verilog model $finishes on these)
        if (ar_hs && (t->ax_arsize != SIZE || t->ax_arburst != INCR))
            fail("AR size " + std::to_string(t->ax_arsize) + " burst "
                 + std::to_string(t->ax_arburst) + " unsupported");
        if (aw_hs && (t->ax_awsize != SIZE || t->ax_awburst != INCR))
            fail("AW size " + std::to_string(t->ax_awsize) + " burst "
                 + std::to_string(t->ax_awburst) + " unsupported");

        // ---- read path
        bool r_last = false;
        if (r_hs) {
            read_beats++;
            r_last = t->ax_rlast;
        }
        if (ar_hs) {
            ArEntry& a = arq.push();
            a.id = t->ax_arid; a.word = word_of(t->ax_araddr); a.len = t->ax_arlen;
            a.err = in_window(t->ax_araddr); a.due = now + (rlat ? rlat : 1);
        }
        if (r_hs) {
            if (r_last) { r_beat = 0; arq.pop(); }
            else r_beat++;
        }
        arq.count += (int)ar_hs - (int)(r_hs && r_last);

        // ---- write path
        bool from_q = !wq.empty();
        uint8_t bus_data[BUS_BYTES];
        const uint8_t* c_data;
        uint64_t c_strb;
        bool c_last;
        uint32_t c_stamp;
        if (from_q) {
            WEntry& w = wq.front();
            c_data = w.data; c_strb = w.strb; c_last = w.last; c_stamp = w.stamp;
        } else {
            get_bytes(t->ax_wdata, bus_data);
            c_data = bus_data; c_strb = (uint64_t)t->ax_wstrb; c_last = t->ax_wlast;
            c_stamp = now;
        }
        bool aw_q = !awq.empty();
        uint32_t c_id; uint64_t c_start; uint32_t c_len; bool c_err;
        if (aw_q) {
            AwEntry& a = awq.front();
            c_id = a.id; c_start = a.word; c_len = a.len; c_err = a.err;
        } else {
            c_id = t->ax_awid; c_start = word_of(t->ax_awaddr); c_len = t->ax_awlen;
            c_err = in_window(t->ax_awaddr);
        }
        bool commit = (from_q || w_hs) && (aw_q || aw_hs) && !bq.full();
        bool wq_push = w_hs && !(!from_q && commit);
        bool wq_pop = commit && from_q;
        uint64_t c_word = c_start + w_beat;
        bool c_inmem = c_word < words;
        bool c_end = w_beat == c_len;
        bool aw_done = commit && c_end;
        bool awq_push = aw_hs && !(!aw_q && aw_done);
        bool awq_pop = aw_done && aw_q;
        bool c_any_decerr = w_decerr || !c_inmem;
        if (commit && c_last != c_end)
            fail("WLAST " + std::to_string(c_last) + " on beat " + std::to_string(w_beat)
                 + " of a " + std::to_string(c_len + 1) + "-beat burst");

        // Read data of this cycle was driven before any write of this edge (as in the
        // Verilog, where the memory updates at the edge), so the write can go now.
        if (commit && c_inmem && !c_err) {
            uint8_t* dst = mem + c_word * BUS_BYTES;
            dirty[(c_word * BUS_BYTES) >> SRN_PAGE_SHIFT] = 1;
            if (c_strb == (BUS_BYTES >= 64 ? ~0ull : ((1ull << BUS_BYTES) - 1)))
                std::memcpy(dst, c_data, BUS_BYTES);
            else
                for (int i = 0; i < BUS_BYTES; i++)
                    if ((c_strb >> i) & 1) dst[i] = c_data[i];
        }
        if (w_hs) write_beats++;
        if (awq_push) {
            AwEntry& a = awq.push();
            a.id = t->ax_awid; a.word = word_of(t->ax_awaddr); a.len = t->ax_awlen;
            a.err = in_window(t->ax_awaddr);
        }
        if (wq_pop) wq.pop();               // before the push: the entry is consumed
        if (wq_push) {
            WEntry& w = wq.push();
            get_bytes(t->ax_wdata, w.data);
            w.strb = (uint64_t)t->ax_wstrb; w.last = t->ax_wlast; w.stamp = now;
        }
        wq.count += (int)wq_push - (int)wq_pop;
        if (commit) {
            if (c_end) {
                BEntry& b = bq.push();
                b.id = c_id;
                b.resp = c_any_decerr ? DECERR : (c_err ? SLVERR : OKAY);
                b.due = c_stamp + (wlat ? wlat : 1);
                w_beat = 0; w_decerr = false;
            } else {
                w_beat++; w_decerr = c_any_decerr;
            }
        }
        if (awq_pop) awq.pop();
        if (b_hs) bq.pop();
        awq.count += (int)awq_push - (int)awq_pop;
        bq.count += (int)aw_done - (int)b_hs;
        now++;
    }

    void clock() {
        top->clk = 0;
        drive();
        top->eval();
        dump(2 * cycle);               // 10 ns clock: low half, then high half
        sample_and_update();
        top->clk = 1;
        top->eval();
        dump(2 * cycle + 1);
        cycle++;
    }
};

// Run f, turning a Verilog $finish/$stop or a model failure into an error return.
template <typename F> int64_t guarded(Sim* s, F f) {
    try {
        int64_t r = f();
        if (!s->error.empty()) return -1;
        return r;
    } catch (const std::exception& e) {
        s->fail(e.what());
        return -1;
    }
}

}  // namespace

extern "C" {

// A new accelerator with `mem_bytes` of zeroed device memory (a multiple of the bus
// width), held in reset for 4 cycles. NULL if the memory cannot be had.
uint64_t srn_page_bytes() { return SRN_PAGE_BYTES; }
uint64_t srn_pages(uint64_t mem_bytes) {
    return (mem_bytes + SRN_PAGE_BYTES - 1) >> SRN_PAGE_SHIFT;
}

void* srn_create(uint64_t mem_bytes) {
    if (mem_bytes == 0 || mem_bytes % BUS_BYTES) return nullptr;
    Sim* s = new (std::nothrow) Sim();
    if (!s) return nullptr;
    s->mem = static_cast<uint8_t*>(std::calloc(mem_bytes, 1));   // pages on first touch
    s->dirty = static_cast<uint8_t*>(std::calloc(srn_pages(mem_bytes), 1));
    if (!s->mem || !s->dirty) {
        std::free(s->mem);
        std::free(s->dirty);
        delete s;
        return nullptr;
    }
    s->mem_bytes = mem_bytes;
    s->words = mem_bytes / BUS_BYTES;
    s->ctx = new VerilatedContext;
    s->ctx->randReset(0);
    s->top = new Vserrano_harness{s->ctx};
    s->rst = true;
    for (int i = 0; i < 4; i++) s->clock();
    s->rst = false;
    s->top->clk = 0;
    s->drive();
    s->top->eval();
    return s;
}

// Start writing a VCD waveform of every signal to `path` (a build with tracing only);
// 0 on success, -1 if this build cannot trace.
int srn_trace_open(void* h, const char* path) {
#ifdef SRN_TRACE
    Sim* s = static_cast<Sim*>(h);
    if (s->trace) return 0;
    s->ctx->traceEverOn(true);
    s->trace = new VerilatedVcdC;
    s->top->trace(s->trace, 99);
    s->trace->set_time_unit("5ns");
    s->trace->set_time_resolution("5ns");
    s->trace->open(path);
    return 0;
#else
    (void)h; (void)path;
    return -1;
#endif
}

void srn_trace_close(void* h) {
#ifdef SRN_TRACE
    Sim* s = static_cast<Sim*>(h);
    if (s->trace) { s->trace->close(); delete s->trace; s->trace = nullptr; }
#else
    (void)h;
#endif
}

void srn_destroy(void* h) {
    Sim* s = static_cast<Sim*>(h);
    if (!s) return;
    srn_trace_close(h);
    try { s->top->final(); } catch (...) {}
    delete s->top;
    delete s->ctx;
    std::free(s->mem);
    std::free(s->dirty);
    delete s;
}

uint8_t* srn_mem(void* h) { return static_cast<Sim*>(h)->mem; }
uint8_t* srn_dirty(void* h) { return static_cast<Sim*>(h)->dirty; }
uint64_t srn_mem_bytes(void* h) { return static_cast<Sim*>(h)->mem_bytes; }
int srn_bus_bytes() { return BUS_BYTES; }
uint64_t srn_cycle(void* h) { return static_cast<Sim*>(h)->cycle; }
int srn_irq(void* h) { return static_cast<Sim*>(h)->top->irq; }
const char* srn_error(void* h) { return static_cast<Sim*>(h)->error.c_str(); }
void srn_clear_error(void* h) { static_cast<Sim*>(h)->error.clear(); }
uint64_t srn_read_beats(void* h) { return static_cast<Sim*>(h)->read_beats; }
uint64_t srn_write_beats(void* h) { return static_cast<Sim*>(h)->write_beats; }

void srn_set_timing(void* h, uint32_t read_latency, uint32_t write_latency) {
    Sim* s = static_cast<Sim*>(h);
    s->rlat = read_latency & 0xFF;     // 8-bit latency inputs, as the Verilog model's
    s->wlat = write_latency & 0xFF;
}

void srn_set_err_window(void* h, uint64_t lo, uint64_t hi) {
    Sim* s = static_cast<Sim*>(h);
    s->err_lo = lo;
    s->err_hi = hi;
}

// Hold the rst pin high for `cycles` clocks (accelerator, registers, memory queues).
int64_t srn_reset(void* h, uint32_t cycles) {
    Sim* s = static_cast<Sim*>(h);
    return guarded(s, [&]() -> int64_t {
        s->rst = true;
        for (uint32_t i = 0; i < cycles; i++) s->clock();
        s->rst = false;
        return cycles;
    });
}

// Clock `cycles` times; with stop_on_irq, stop early at the first cycle whose irq is
// high (checked before each clock). Returns the clocks run, or -1 on a model error.
int64_t srn_run(void* h, uint64_t cycles, int stop_on_irq) {
    Sim* s = static_cast<Sim*>(h);
    return guarded(s, [&]() -> int64_t {
        uint64_t n = 0;
        while (n < cycles) {
            if (stop_on_irq && s->top->irq) break;
            s->clock();
            n++;
            if (!s->error.empty()) break;
        }
        return (int64_t)n;
    });
}

// One AXI-Lite register access, at most `max_cycles` clocks. Returns 0 with the read
// data in *value (reads), -2 on a time-out, -1 on a model error.
static int64_t lite_access(Sim* s, bool is_write, uint32_t addr, uint32_t wdata,
                           uint32_t* value, uint64_t max_cycles) {
    Lite keep;
    int64_t r = guarded(s, [&]() -> int64_t {
        s->lite = Lite{};
        s->lite.active = true; s->lite.is_write = is_write;
        s->lite.addr = addr; s->lite.wdata = wdata;
        uint64_t n = 0;
        while (!s->lite.done && n < max_cycles && s->error.empty()) { s->clock(); n++; }
        keep = s->lite;
        s->lite = Lite{};
        return keep.done ? 0 : -2;
    });
    if (r == 0 && value) *value = keep.rdata;
    return r;
}

int64_t srn_reg_write(void* h, uint32_t addr, uint32_t value, uint64_t max_cycles) {
    return lite_access(static_cast<Sim*>(h), true, addr, value, nullptr, max_cycles);
}

int64_t srn_reg_read(void* h, uint32_t addr, uint32_t* value, uint64_t max_cycles) {
    return lite_access(static_cast<Sim*>(h), false, addr, 0, value, max_cycles);
}

// The bare loop: clock the model `cycles` times with the bus and the host port idle and
// no memory model: the ceiling of any harness for this RTL. Returns the clocks run.
int64_t srn_bare_loop(void* h, uint64_t cycles) {
    Sim* s = static_cast<Sim*>(h);
    return guarded(s, [&]() -> int64_t {
        Vserrano_harness* t = s->top;
        for (uint64_t i = 0; i < cycles; i++) {
            t->clk = 0;
            t->eval();
            t->clk = 1;
            t->eval();
        }
        s->cycle += cycles;
        return (int64_t)cycles;
    });
}

}  // extern "C"
