"""serrano's hardware: Amaranth 0.5 components, from the PE up to the accelerator."""
