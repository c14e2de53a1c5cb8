"""serrano's simulation layer: Verilog generation, simulator runners, cocotb harness."""
