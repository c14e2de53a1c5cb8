// serrano_axi_mem: an AXI4 subordinate memory for long simulations (a test fixture).
//
// The whole memory lives in Verilog, so a run of hundreds of thousands of cycles needs no
// Python coroutine per clock. It is loaded and read back in bulk through files:
//
//   +mem_init=<path>  at time 0, $readmemh the file into the memory (after zeroing it).
//                     Word i holds bytes [i*DATA_BYTES, (i+1)*DATA_BYTES), little-endian:
//                     byte 0 of the image is bits 7:0 of word 0. Without it, the memory
//                     starts all zero. Python's sim.hdl.write_hex() writes such files.
//   +mem_dump_words=<n>  dump only words 0..n-1 (the image's size; default: all WORDS).
//   +mem_dump=<path>  on every rising clock edge where `dump` is high, $writememh the
//                     whole memory (WORDS words) to that file, as it was before the writes
//                     of that edge. sim.hdl.read_hex() reads it back. `dump` high without
//                     this plusarg is an error that ends the simulation. A nonzero
//                     `dump_len` input (at most WORDS) dumps words 0..dump_len-1 instead.
//   +mem_load=<path>  on every rising clock edge where `load` is high, $readmemh that file
//                     into the memory (words it does not hold keep their contents): a
//                     simulation that stays running loads each run's image this way.
//                     `load` high without this plusarg is an error, as for `dump`.
//
// Protocol
// --------
// INCR bursts of full-width beats (AxSIZE = log2(DATA_BYTES)), 1 to 256 beats, any start
// address (an unaligned start is rounded down to its word; the manager masks the bytes).
// Another AxSIZE or burst type, or a WLAST that disagrees with AWLEN, prints a line
// starting "ERROR:" and ends the simulation with $finish (cocotb then fails the test).
//
// Read channel: up to 16 accepted ARs queue, each with the cycle at which its data is due.
// An AR accepted in cycle t has its first beat valid in cycle t + read_latency (a latency
// of 0 is taken as 1); beats of one burst and of successive bursts follow back to back, one
// per cycle, while RREADY is high. Bursts are answered in order of acceptance (any ID).
// Read data is taken from the memory in the cycle the beat is presented.
//
// Write channel: AW and W are independent. Up to 8 AWs and up to 16 W beats wait in queues,
// so W data may come before its AW; WREADY is high while the W queue has room, AWREADY while
// the AW queue has room. A beat is written into the memory at the end of its handshake
// cycle when its AW was accepted in that cycle or earlier and no older beat waits;
// otherwise it waits in the W queue, and queued beats are written one per cycle once their
// AW is known. The B response of a burst whose last W handshake is in cycle t is valid from
// cycle t + write_latency (0 taken as 1), or from the cycle after its last beat is written
// if that is later; up to 16 B responses queue, in order. WSTRB is honoured byte by byte.
//
// Errors
// ------
// A burst whose start address is in [err_lo, err_hi) is answered SLVERR: a read gives
// SLVERR and zero data on every beat, a write changes nothing and answers SLVERR
// (err_lo >= err_hi disables the window; the window is sampled at the AR/AW handshake).
// A beat whose word lies beyond the memory (word index >= WORDS) is never stored nor read:
// it reads as DECERR with zero data, and a write burst with such a beat answers DECERR
// (its in-memory beats are still written unless the burst is SLVERR). DECERR wins over
// SLVERR on a beat.
//
// Counters: reads_beats counts R handshakes, write_beats W handshakes, since reset.
// rst is synchronous, active high: it empties every queue and clears the counters (the
// memory keeps its contents); the READY outputs are low while it is high.

`default_nettype none

/* verilator lint_off DECLFILENAME */
module serrano_axi_mem #(
    parameter DATA_BYTES = 16,
    parameter ADDR_WIDTH = 32,
    parameter WORDS = 65536,
    parameter ID_WIDTH = 1
) (
    input  wire                      clk,
    input  wire                      rst,

    input  wire [ID_WIDTH-1:0]       s_axi_awid,
    input  wire [ADDR_WIDTH-1:0]     s_axi_awaddr,
    input  wire [7:0]                s_axi_awlen,
    input  wire [2:0]                s_axi_awsize,
    input  wire [1:0]                s_axi_awburst,
    input  wire                      s_axi_awvalid,
    output wire                      s_axi_awready,
    input  wire [8*DATA_BYTES-1:0]   s_axi_wdata,
    input  wire [DATA_BYTES-1:0]     s_axi_wstrb,
    input  wire                      s_axi_wlast,
    input  wire                      s_axi_wvalid,
    output wire                      s_axi_wready,
    output wire [ID_WIDTH-1:0]       s_axi_bid,
    output wire [1:0]                s_axi_bresp,
    output wire                      s_axi_bvalid,
    input  wire                      s_axi_bready,
    input  wire [ID_WIDTH-1:0]       s_axi_arid,
    input  wire [ADDR_WIDTH-1:0]     s_axi_araddr,
    input  wire [7:0]                s_axi_arlen,
    input  wire [2:0]                s_axi_arsize,
    input  wire [1:0]                s_axi_arburst,
    input  wire                      s_axi_arvalid,
    output wire                      s_axi_arready,
    output wire [ID_WIDTH-1:0]       s_axi_rid,
    output wire [8*DATA_BYTES-1:0]   s_axi_rdata,
    output wire [1:0]                s_axi_rresp,
    output wire                      s_axi_rlast,
    output wire                      s_axi_rvalid,
    input  wire                      s_axi_rready,

    input  wire [7:0]                read_latency,
    input  wire [7:0]                write_latency,
    input  wire [ADDR_WIDTH-1:0]     err_lo,
    input  wire [ADDR_WIDTH-1:0]     err_hi,
    input  wire                      dump,
    input  wire [31:0]               dump_len,
    input  wire                      load,
    output reg  [31:0]               reads_beats,
    output reg  [31:0]               write_beats
);

    localparam DW = 8 * DATA_BYTES;
    localparam integer LG = $clog2(DATA_BYTES);      // byte offset bits of an address
    localparam WA = ADDR_WIDTH - LG + 9;             // word index + 8-bit beat, no overflow
    localparam IW = (WORDS > 1) ? $clog2(WORDS) : 1; // memory index width
    localparam AR_DEPTH = 16, AR_PW = 4;             // queue depths and pointer widths
    localparam AW_DEPTH = 8,  AW_PW = 3;
    localparam WQ_DEPTH = 16, WQ_PW = 4;
    localparam B_DEPTH  = 16, B_PW  = 4;
    localparam [1:0] OKAY = 2'b00, SLVERR = 2'b10, DECERR = 2'b11;
    localparam [1:0] INCR = 2'b01;
    localparam [2:0] SIZE = LG[2:0];                 // the only AxSIZE served
    localparam [63:0] WORDS64 = {32'd0, WORDS[31:0]};

    reg [DW-1:0] mem [0:WORDS-1];

    // ---------------------------------------------------------------- bulk load and dump
    reg [8*1024-1:0] init_path, dump_path, load_path;
    reg have_dump, have_load;
    integer i;
    integer dump_words;
    initial begin
        for (i = 0; i < WORDS; i = i + 1)
            mem[i] = {DW{1'b0}};
        have_dump = 1'b0;
        dump_path = 0;
        dump_words = WORDS;
        if ($value$plusargs("mem_dump=%s", dump_path))
            have_dump = 1'b1;
        if ($value$plusargs("mem_dump_words=%d", dump_words))
            if (dump_words < 1 || dump_words > WORDS)
                dump_words = WORDS;
        if ($value$plusargs("mem_init=%s", init_path))
            $readmemh(init_path, mem);
        have_load = 1'b0;
        load_path = 0;
        if ($value$plusargs("mem_load=%s", load_path))
            have_load = 1'b1;
    end

    always @(posedge clk) begin
        if (dump) begin
            if (have_dump) begin
                if (dump_len != 32'd0 && {32'd0, dump_len} <= WORDS64)
                    $writememh(dump_path, mem, 0, dump_len - 1);
                else
                    $writememh(dump_path, mem, 0, dump_words - 1);
            end else begin
                $display("ERROR: %m: dump is high but no +mem_dump=<path> plusarg was given");
                $finish;
            end
        end
        if (load) begin
            if (have_load) begin
                $readmemh(load_path, mem);
            end else begin
                $display("ERROR: %m: load is high but no +mem_load=<path> plusarg was given");
                $finish;
            end
        end
    end

    // ---------------------------------------------------------------- time and helpers
    reg [31:0] now;                         // cycles since reset: the cycle being run
    wire [7:0] rlat = (read_latency == 8'd0) ? 8'd1 : read_latency;
    wire [7:0] wlat = (write_latency == 8'd0) ? 8'd1 : write_latency;

    function in_window(input [ADDR_WIDTH-1:0] addr);
        in_window = (addr >= err_lo) && (addr < err_hi);
    endfunction

    /* verilator lint_off UNUSEDSIGNAL */      // the byte offset bits are dropped
    function [WA-1:0] word_of(input [ADDR_WIDTH-1:0] addr);
        word_of = {{(WA-ADDR_WIDTH+LG){1'b0}}, addr[ADDR_WIDTH-1:LG]};
    endfunction
    /* verilator lint_on UNUSEDSIGNAL */

    // ---------------------------------------------------------------- read path
    reg [ID_WIDTH-1:0] arq_id    [0:AR_DEPTH-1];
    reg [WA-1:0]       arq_word  [0:AR_DEPTH-1];
    reg [7:0]          arq_len   [0:AR_DEPTH-1];
    reg                arq_err   [0:AR_DEPTH-1];
    reg [31:0]         arq_due   [0:AR_DEPTH-1];
    reg [AR_PW-1:0]    arq_head, arq_tail;
    reg [AR_PW:0]      arq_count;
    reg [7:0]          r_beat;

    wire ar_hs = s_axi_arvalid && s_axi_arready;
    wire r_hs  = s_axi_rvalid && s_axi_rready;
    assign s_axi_arready = !rst && (arq_count != AR_DEPTH);

    wire        r_due   = ($signed(now - arq_due[arq_head]) >= 0);   // wrap-safe
    wire [WA-1:0] r_word = arq_word[arq_head] + {{(WA-8){1'b0}}, r_beat};
    wire        r_inmem = ({{(64-WA){1'b0}}, r_word} < WORDS64);
    wire        r_err   = arq_err[arq_head];
    assign s_axi_rvalid = (arq_count != 0) && r_due;
    assign s_axi_rid    = arq_id[arq_head];
    assign s_axi_rlast  = (r_beat == arq_len[arq_head]);
    assign s_axi_rresp  = !r_inmem ? DECERR : (r_err ? SLVERR : OKAY);
    assign s_axi_rdata  = (r_inmem && !r_err) ? mem[r_word[IW-1:0]] : {DW{1'b0}};

    always @(posedge clk) begin
        if (rst) begin
            arq_head <= 0;
            arq_tail <= 0;
            arq_count <= 0;
            r_beat <= 8'd0;
            reads_beats <= 32'd0;
        end else begin
            if (ar_hs) begin
                arq_id[arq_tail]   <= s_axi_arid;
                arq_word[arq_tail] <= word_of(s_axi_araddr);
                arq_len[arq_tail]  <= s_axi_arlen;
                arq_err[arq_tail]  <= in_window(s_axi_araddr);
                arq_due[arq_tail]  <= now + {24'd0, rlat};
                arq_tail <= arq_tail + {{(AR_PW-1){1'b0}}, 1'b1};
            end
            if (r_hs) begin
                reads_beats <= reads_beats + 32'd1;
                if (s_axi_rlast) begin
                    r_beat <= 8'd0;
                    arq_head <= arq_head + {{(AR_PW-1){1'b0}}, 1'b1};
                end else begin
                    r_beat <= r_beat + 8'd1;
                end
            end
            arq_count <= arq_count + {{AR_PW{1'b0}}, ar_hs} - {{AR_PW{1'b0}}, r_hs && s_axi_rlast};
        end
    end

    // ---------------------------------------------------------------- write path
    // AW queue
    reg [ID_WIDTH-1:0] awq_id   [0:AW_DEPTH-1];
    reg [WA-1:0]       awq_word [0:AW_DEPTH-1];
    reg [7:0]          awq_len  [0:AW_DEPTH-1];
    reg                awq_err  [0:AW_DEPTH-1];
    reg [AW_PW-1:0]    awq_head, awq_tail;
    reg [AW_PW:0]      awq_count;
    // W beat queue (a fall-through FIFO: a beat whose AW is known bypasses it)
    reg [DW-1:0]         wq_data  [0:WQ_DEPTH-1];
    reg [DATA_BYTES-1:0] wq_strb  [0:WQ_DEPTH-1];
    reg                  wq_last  [0:WQ_DEPTH-1];
    reg [31:0]           wq_stamp [0:WQ_DEPTH-1];
    reg [WQ_PW-1:0]      wq_head, wq_tail;
    reg [WQ_PW:0]        wq_count;
    // B queue
    reg [ID_WIDTH-1:0] bq_id   [0:B_DEPTH-1];
    reg [1:0]          bq_resp [0:B_DEPTH-1];
    reg [31:0]         bq_due  [0:B_DEPTH-1];
    reg [B_PW-1:0]     bq_head, bq_tail;
    reg [B_PW:0]       bq_count;
    // the burst being written
    reg [7:0]          w_beat;
    reg                w_decerr;             // a beat of this burst fell outside memory

    wire aw_hs = s_axi_awvalid && s_axi_awready;
    wire w_hs  = s_axi_wvalid && s_axi_wready;
    wire b_hs  = s_axi_bvalid && s_axi_bready;
    assign s_axi_awready = !rst && (awq_count != AW_DEPTH);
    assign s_axi_wready  = !rst && (wq_count != WQ_DEPTH);

    // The beat offered to the memory: the oldest queued one, else the one on the bus.
    wire                  from_q  = (wq_count != 0);
    wire [DW-1:0]         c_data  = from_q ? wq_data[wq_head]  : s_axi_wdata;
    wire [DATA_BYTES-1:0] c_strb  = from_q ? wq_strb[wq_head]  : s_axi_wstrb;
    wire                  c_last  = from_q ? wq_last[wq_head]  : s_axi_wlast;
    wire [31:0]           c_stamp = from_q ? wq_stamp[wq_head] : now;
    // The burst it belongs to: the oldest queued AW, else the one on the bus.
    wire                  aw_q    = (awq_count != 0);
    wire [ID_WIDTH-1:0]   c_id    = aw_q ? awq_id[awq_head]   : s_axi_awid;
    wire [WA-1:0]         c_start = aw_q ? awq_word[awq_head] : word_of(s_axi_awaddr);
    wire [7:0]            c_len   = aw_q ? awq_len[awq_head]  : s_axi_awlen;
    wire                  c_err   = aw_q ? awq_err[awq_head]  : in_window(s_axi_awaddr);
    wire commit = (from_q || w_hs) && (aw_q || aw_hs) && (bq_count != B_DEPTH);
    wire wq_push = w_hs && !(!from_q && commit);
    wire wq_pop  = commit && from_q;

    wire [WA-1:0] c_word  = c_start + {{(WA-8){1'b0}}, w_beat};
    wire          c_inmem = ({{(64-WA){1'b0}}, c_word} < WORDS64);
    wire          c_end   = (w_beat == c_len);
    wire          aw_done = commit && c_end;                 // the burst's last beat
    wire awq_push = aw_hs && !(!aw_q && aw_done);
    wire awq_pop  = aw_done && aw_q;
    wire [IW-1:0] c_index = c_word[IW-1:0];
    wire [DW-1:0] c_mask;
    genvar g;
    generate
        for (g = 0; g < DATA_BYTES; g = g + 1) begin : strobe
            assign c_mask[8*g +: 8] = {8{c_strb[g]}};
        end
    endgenerate
    wire [DW-1:0] c_merged = (mem[c_index] & ~c_mask) | (c_data & c_mask);
    wire          c_any_decerr = w_decerr || !c_inmem;

    wire        b_due  = ($signed(now - bq_due[bq_head]) >= 0);
    assign s_axi_bvalid = (bq_count != 0) && b_due;
    assign s_axi_bid    = bq_id[bq_head];
    assign s_axi_bresp  = bq_resp[bq_head];

    always @(posedge clk) begin
        if (commit && c_inmem && !c_err)
            mem[c_index] <= c_merged;
    end

    always @(posedge clk) begin
        if (rst) begin
            awq_head <= 0;
            awq_tail <= 0;
            awq_count <= 0;
            wq_head <= 0;
            wq_tail <= 0;
            wq_count <= 0;
            bq_head <= 0;
            bq_tail <= 0;
            bq_count <= 0;
            w_beat <= 8'd0;
            w_decerr <= 1'b0;
            write_beats <= 32'd0;
        end else begin
            if (awq_push) begin
                awq_id[awq_tail]   <= s_axi_awid;
                awq_word[awq_tail] <= word_of(s_axi_awaddr);
                awq_len[awq_tail]  <= s_axi_awlen;
                awq_err[awq_tail]  <= in_window(s_axi_awaddr);
                awq_tail <= awq_tail + {{(AW_PW-1){1'b0}}, 1'b1};
            end
            if (w_hs)
                write_beats <= write_beats + 32'd1;
            if (wq_push) begin
                wq_data[wq_tail]  <= s_axi_wdata;
                wq_strb[wq_tail]  <= s_axi_wstrb;
                wq_last[wq_tail]  <= s_axi_wlast;
                wq_stamp[wq_tail] <= now;
                wq_tail <= wq_tail + {{(WQ_PW-1){1'b0}}, 1'b1};
            end
            if (wq_pop)
                wq_head <= wq_head + {{(WQ_PW-1){1'b0}}, 1'b1};
            wq_count <= wq_count + {{WQ_PW{1'b0}}, wq_push} - {{WQ_PW{1'b0}}, wq_pop};
            if (commit) begin
                if (c_end) begin
                    bq_id[bq_tail]   <= c_id;
                    bq_resp[bq_tail] <= c_any_decerr ? DECERR : (c_err ? SLVERR : OKAY);
                    bq_due[bq_tail]  <= c_stamp + {24'd0, wlat};
                    bq_tail <= bq_tail + {{(B_PW-1){1'b0}}, 1'b1};
                    w_beat <= 8'd0;
                    w_decerr <= 1'b0;
                end else begin
                    w_beat <= w_beat + 8'd1;
                    w_decerr <= c_any_decerr;
                end
            end
            if (awq_pop)
                awq_head <= awq_head + {{(AW_PW-1){1'b0}}, 1'b1};
            if (b_hs)
                bq_head <= bq_head + {{(B_PW-1){1'b0}}, 1'b1};
            awq_count <= awq_count + {{AW_PW{1'b0}}, awq_push} - {{AW_PW{1'b0}}, awq_pop};
            bq_count <= bq_count + {{B_PW{1'b0}}, aw_done} - {{B_PW{1'b0}}, b_hs};
        end
    end

    // ---------------------------------------------------------------- time, checks
    // A protocol error ends the simulation (the same way under every simulator: $error
    // stops Verilator at once but lets Icarus go on, so it is not used).
    wire bad_ar = ar_hs && (s_axi_arsize != SIZE || s_axi_arburst != INCR);
    wire bad_aw = aw_hs && (s_axi_awsize != SIZE || s_axi_awburst != INCR);
    wire bad_w  = commit && (c_last != c_end);
    always @(posedge clk) begin
        if (rst) begin
            now <= 32'd0;
        end else begin
            now <= now + 32'd1;
            if (bad_ar)
                $display("ERROR: %m: AR size %0d burst %0d unsupported (need size %0d, INCR)",
                         s_axi_arsize, s_axi_arburst, SIZE);
            if (bad_aw)
                $display("ERROR: %m: AW size %0d burst %0d unsupported (need size %0d, INCR)",
                         s_axi_awsize, s_axi_awburst, SIZE);
            if (bad_w)
                $display("ERROR: %m: WLAST %0d on beat %0d of a %0d-beat burst",
                         c_last, w_beat, c_len + 9'd1);
            if (bad_ar || bad_aw || bad_w)
                $finish;
        end
    end

    // Defined outputs from time 0, before the first reset (Icarus would start at x).
    initial begin
        arq_head = 0; arq_tail = 0; arq_count = 0; r_beat = 8'd0;
        awq_head = 0; awq_tail = 0; awq_count = 0;
        wq_head = 0; wq_tail = 0; wq_count = 0;
        bq_head = 0; bq_tail = 0; bq_count = 0;
        w_beat = 8'd0; w_decerr = 1'b0; now = 32'd0;
        reads_beats = 32'd0; write_beats = 32'd0;
    end

endmodule

`default_nettype wire
