"""serrano's software: golden models, driver and command line."""
