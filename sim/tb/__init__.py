"""cocotb test modules. They run inside the simulator, started by :mod:`sim.runner`."""
