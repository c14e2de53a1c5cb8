// A simulation model of the Lattice ECP5 TRELLIS_FF, written for serrano's lint and
// Icarus checks of the ECP5 form of the design (hw/fanout.py instantiates it, kept, for
// registered copies of a control value): a flip-flop clocked on CLK's rising edge, its
// data DI loaded when CE is high, reset synchronously to zero by LSR. Only the mode
// hw/fanout.py uses is modelled (CLKMUX "CLK", CEMUX "1" or "CE", LSRMUX "LSR", REGSET
// "RESET", SRMODE "LSR_OVER_CE", GSR "DISABLED"); another stops the simulation at time 0.
// The cell's M input (the slice's bypass, which nextpnr's packer uses for the data of a
// flip-flop no LUT feeds) is left out: hw/fanout.py leaves it open.
`default_nettype none
/* verilator lint_off UNUSEDPARAM */
module TRELLIS_FF (
    input  wire CLK, CE, LSR, DI,
    output reg  Q
);
    parameter GSR = "DISABLED";
    parameter CEMUX = "1";
    parameter CLKMUX = "CLK";
    parameter LSRMUX = "LSR";
    parameter SRMODE = "LSR_OVER_CE";
    parameter REGSET = "RESET";
    parameter REGMODE = "FF";
    wire enabled = (CEMUX == "1") ? 1'b1 : CE;
    initial begin
        if (CLKMUX != "CLK" || LSRMUX != "LSR" || SRMODE != "LSR_OVER_CE"
                || REGSET != "RESET" || GSR != "DISABLED" || REGMODE != "FF"
                || (CEMUX != "1" && CEMUX != "CE")) begin
            $display("TRELLIS_FF model: a mode serrano does not use");
            $finish;
        end
        Q = 1'b0;
    end
    always @(posedge CLK) begin
        if (LSR) Q <= 1'b0;
        else if (enabled) Q <= DI;
    end
endmodule
`default_nettype wire
