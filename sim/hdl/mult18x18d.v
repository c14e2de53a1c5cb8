// A simulation model of the Lattice ECP5 sysDSP MULT18X18D, written for serrano's tests
// from the block's documented behaviour (Lattice TN1267, "ECP5 and ECP5-5G sysDSP Usage
// Guide"): Yosys ships the cell only as a black box, so the ECP5 form of hw/dsp.py's
// Multiplier is simulated against its behavioural form with this model.
//
// P = A x B (18 x 18 into 36 bits), each operand signed when its SIGNEDx pin is high.
// Optional registers, each named by a parameter: the A and B input registers (the sign
// pins registered with their operand), the pipeline register after the multiplier and
// the output register; each clocked by CLK0 when its REG_*_CLK is "CLK0", enabled by CE0,
// reset synchronously to zero by RST0 (RESETMODE "SYNC"). What serrano does not use is
// not modelled and stops the simulation at time 0 if asked for: another clock, enable or
// reset pin, the C input's register, the shift chains and cascades (SOURCEA/SOURCEB high,
// SRI*/SRO*/RO* ports), asynchronous reset, the multiplier bypass.
// The pins and parameters the model does not use are declared so that any netlist of the
// cell elaborates: Verilator's unused-signal and unused-parameter warnings are off here.
`default_nettype none
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off UNUSEDPARAM */
module MULT18X18D (
    input  wire A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17,
    input  wire B0, B1, B2, B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17,
    input  wire C0, C1, C2, C3, C4, C5, C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17,
    input  wire SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input  wire CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3,
    output wire P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13, P14, P15, P16, P17,
    output wire P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32,
    output wire P33, P34, P35,
    output wire SIGNEDP
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    /* verilator lint_on UNUSEDPARAM */
    localparam REG_A = REG_INPUTA_CLK == "CLK0";
    localparam REG_B = REG_INPUTB_CLK == "CLK0";
    localparam REG_PIPE = REG_PIPELINE_CLK == "CLK0";
    localparam REG_OUT = REG_OUTPUT_CLK == "CLK0";

    initial begin
        if ((REG_INPUTA_CLK != "NONE" && !REG_A) || (REG_INPUTB_CLK != "NONE" && !REG_B)
                || (REG_PIPELINE_CLK != "NONE" && !REG_PIPE)
                || (REG_OUTPUT_CLK != "NONE" && !REG_OUT) || REG_INPUTC_CLK != "NONE")
            $fatal(1, "MULT18X18D model: only CLK0 registers (and none on C) are modelled");
        if (REG_INPUTA_CE != "CE0" || REG_INPUTB_CE != "CE0" || REG_PIPELINE_CE != "CE0"
                || REG_OUTPUT_CE != "CE0" || REG_INPUTA_RST != "RST0"
                || REG_INPUTB_RST != "RST0" || REG_PIPELINE_RST != "RST0"
                || REG_OUTPUT_RST != "RST0")
            $fatal(1, "MULT18X18D model: only CE0 and RST0 are modelled");
        if (RESETMODE != "SYNC" || MULT_BYPASS != "DISABLED" || HIGHSPEED_CLK != "NONE")
            $fatal(1, "MULT18X18D model: synchronous reset, no bypass, no high-speed clock");
    end

    /* verilator lint_on UNUSEDSIGNAL */
    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2,
                     A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2,
                     B1, B0};

    reg [17:0] a_q, b_q;
    reg sa_q, sb_q;
    reg [35:0] pipe_q, out_q;

    wire [17:0] a_m = REG_A ? a_q : a;
    wire [17:0] b_m = REG_B ? b_q : b;
    wire sa_m = REG_A ? sa_q : SIGNEDA;
    wire sb_m = REG_B ? sb_q : SIGNEDB;
    // Each operand extended by one bit (its sign, or zero), the 38-bit product cut to 36.
    wire signed [18:0] a_x = {sa_m & a_m[17], a_m};
    wire signed [18:0] b_x = {sb_m & b_m[17], b_m};
    /* verilator lint_off UNUSEDSIGNAL */
    wire signed [37:0] full = a_x * b_x;     // the block's P keeps its low 36 bits
    /* verilator lint_on UNUSEDSIGNAL */
    wire [35:0] product = full[35:0];
    wire [35:0] piped = REG_PIPE ? pipe_q : product;
    wire [35:0] p = REG_OUT ? out_q : piped;

    always @(posedge CLK0) begin
        if (RST0) begin
            a_q <= 18'd0; b_q <= 18'd0; sa_q <= 1'b0; sb_q <= 1'b0;
            pipe_q <= 36'd0; out_q <= 36'd0;
        end else if (CE0) begin
            a_q <= a; b_q <= b; sa_q <= SIGNEDA; sb_q <= SIGNEDB;
            pipe_q <= product;
            out_q <= piped;
        end
        if (SOURCEA !== 1'b0 || SOURCEB !== 1'b0)
            $fatal(1, "MULT18X18D model: the shift-chain inputs (SOURCEA/SOURCEB) are not modelled");
    end

    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
            P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2,
            P1, P0} = p;
    assign SIGNEDP = sa_m | sb_m;
endmodule
`default_nettype wire
