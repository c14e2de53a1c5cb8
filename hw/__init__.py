"""serrano's hardware: Amaranth 0.5 components, from the PE up to the accelerator."""

import hashlib
from pathlib import Path


def source_hash():
    """SHA-256 over the names and bytes of every ``hw/*.py`` file as they are now."""
    h = hashlib.sha256()
    for src in sorted(Path(__file__).resolve().parent.glob("*.py")):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    return h.hexdigest()


# The sources as this process imports them (hw/__init__ runs before any hw module). A
# Verilog cache keyed by the files on disk would otherwise let a process that imported
# the RTL before an edit store its old design under the new sources' key.
SOURCE_HASH_AT_IMPORT = source_hash()
