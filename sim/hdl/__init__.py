"""Hand-written Verilog test fixtures, and the file formats they exchange with Python.

``serrano_axi_mem`` (``axi_mem.v``) is an AXI4 subordinate memory with configurable
latency, loaded from and dumped to ``$readmemh``/``$writememh`` files, so that long
simulations keep the memory out of Python (see the module's header comment for its
protocol, plusargs and error responses).

* :func:`axi_mem_verilog` gives its Verilog text, optionally with other parameter
  defaults and another module name (a cocotb top level cannot be given parameters).
* :func:`write_hex` writes a byte image as a ``$readmemh`` file for ``+mem_init=``.
* :func:`read_hex` reads a ``$writememh`` file (from ``+mem_dump=``) back into bytes.

Word ``i`` of a file holds bytes ``[i*data_bytes, (i+1)*data_bytes)`` of the image,
little-endian: byte 0 is bits 7:0 of word 0, so it is the *last* two hex digits of the
first line. Both directions are vectorised with numpy (4 MiB in a few tens of ms).
"""

import re
from pathlib import Path

import numpy as np

__all__ = ["AXI_MEM_TOP", "AXI_MEM_SOURCE", "axi_mem_verilog", "write_hex", "read_hex"]

AXI_MEM_TOP = "serrano_axi_mem"
AXI_MEM_SOURCE = Path(__file__).with_name("axi_mem.v")

_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE = np.full(256, 0xFF, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", dtype=np.uint8)] = np.arange(10, 16)
_NIBBLE[np.frombuffer(b"ABCDEF", dtype=np.uint8)] = np.arange(10, 16)


def _check_data_bytes(data_bytes):
    if (not isinstance(data_bytes, int) or isinstance(data_bytes, bool) or data_bytes < 1
            or data_bytes > 128 or data_bytes & (data_bytes - 1)):
        raise ValueError(f"data_bytes must be a power of two up to 128, not {data_bytes!r}")


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


def axi_mem_verilog(*, name=AXI_MEM_TOP, data_bytes=None, addr_width=None, words=None,
                    id_width=None):
    """The Verilog text of ``serrano_axi_mem``, to concatenate with a design's own text.

    With no arguments it is ``axi_mem.v`` as is. Each given argument replaces the default
    of parameter ``DATA_BYTES``, ``ADDR_WIDTH``, ``WORDS`` or ``ID_WIDTH``, and ``name``
    renames the module: that is how a cocotb test gets a non-default configuration as
    its top level, or a design holds two differently configured memories.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", name):
        raise ValueError(f"name must be a Verilog identifier, not {name!r}")
    text = AXI_MEM_SOURCE.read_text()
    overrides = {"DATA_BYTES": data_bytes, "ADDR_WIDTH": addr_width, "WORDS": words,
                 "ID_WIDTH": id_width}
    if data_bytes is not None:
        _check_data_bytes(data_bytes)
    for key in ("addr_width", "words", "id_width"):
        if overrides[key.upper()] is not None:
            _check_positive(key, overrides[key.upper()])
    if addr_width is not None and not 12 <= addr_width <= 48:
        raise ValueError(f"addr_width must be between 12 and 48, not {addr_width!r}")
    lg = (data_bytes or 16).bit_length() - 1
    if words is not None and addr_width is not None and words > 2 ** (addr_width - lg):
        raise ValueError(f"words must be at most {2 ** (addr_width - lg)} for addr_width "
                         f"{addr_width}, not {words!r}")
    for param, value in overrides.items():
        if value is None:
            continue
        text, n = re.subn(rf"(parameter {param} = )\d+", rf"\g<1>{value}", text, count=1)
        assert n == 1, f"parameter {param} not found in {AXI_MEM_SOURCE}"
    if name != AXI_MEM_TOP:
        text, n = re.subn(rf"\bmodule {AXI_MEM_TOP}\b", f"module {name}", text, count=1)
        assert n == 1
    return text


def _image_array(image):
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image must be bytes or a uint8 array, not a {image.dtype} array")
        return image.reshape(-1)
    if not isinstance(image, (bytes, bytearray, memoryview)):
        raise ValueError(f"image must be bytes or a uint8 array, not {type(image).__name__}")
    return np.frombuffer(image, dtype=np.uint8)


def write_hex(path, image, data_bytes, *, words=None):
    """Write ``image`` (bytes or a uint8 array) as a ``$readmemh`` file of ``data_bytes``
    wide words, one per line, zero-padding the last word. Returns the number of words.

    ``words`` pads the file with zero words up to that count (normally the memory's
    ``WORDS``): Icarus warns when a ``$readmemh`` file is shorter than the memory.
    """
    _check_data_bytes(data_bytes)
    data = _image_array(image)
    n = -(-data.size // data_bytes)
    if words is not None:
        if not isinstance(words, int) or isinstance(words, bool) or words < n:
            raise ValueError(f"words must be an integer of at least {n} (the image's words), "
                             f"not {words!r}")
        n = words
    padded = np.zeros(n * data_bytes, dtype=np.uint8)
    padded[:data.size] = data
    msb_first = padded.reshape(n, data_bytes)[:, ::-1]
    text = np.empty((n, 2 * data_bytes + 1), dtype=np.uint8)
    text[:, 0:2 * data_bytes:2] = _HEX_DIGITS[msb_first >> 4]
    text[:, 1:2 * data_bytes:2] = _HEX_DIGITS[msb_first & 0xF]
    text[:, -1] = ord("\n")
    Path(path).write_bytes(text.tobytes())
    return n


def _parse_slow(data, data_bytes):
    """Any ``$readmemh`` syntax: ``@address`` lines, ``_`` separators, short words."""
    words = {}
    address = 0
    top = 1 << (8 * data_bytes)
    for token in data.split():
        text = token.decode("ascii", errors="replace")
        if text.startswith("@"):
            address = int(text[1:], 16)
            continue
        try:
            value = int(text.replace("_", ""), 16)
        except ValueError:
            raise ValueError(f"word {address} is {text!r}, not a hex number (x or z bits?)")
        if value >= top:
            raise ValueError(f"word {address} is {text!r}, wider than {data_bytes} bytes")
        words[address] = value
        address += 1
    n = max(words) + 1 if words else 0
    if len(words) != n:
        raise ValueError("the file leaves holes between its words")
    out = bytearray(n * data_bytes)
    for i, value in words.items():
        out[i * data_bytes:(i + 1) * data_bytes] = value.to_bytes(data_bytes, "little")
    return np.frombuffer(bytes(out), dtype=np.uint8)


def read_hex(path, n_bytes, data_bytes):
    """The first ``n_bytes`` bytes of the image in a ``$writememh``/``$readmemh`` file of
    ``data_bytes`` wide words (as Icarus or Verilator write it), as ``bytes``.

    Raises ValueError if the file holds fewer bytes, or a word is not hex (x or z).
    """
    _check_data_bytes(data_bytes)
    if not isinstance(n_bytes, int) or isinstance(n_bytes, bool) or n_bytes < 0:
        raise ValueError(f"n_bytes must be a non-negative integer, not {n_bytes!r}")
    data = Path(path).read_bytes()
    if b"//" in data:
        data = re.sub(rb"//[^\n]*", b"", data)
    tokens = data.split()
    width = 2 * data_bytes
    if tokens and b"@" not in data and b"_" not in data:
        arr = np.array(tokens, dtype=f"S{width}")
        lengths = np.char.str_len(arr)
        # np.array truncates longer tokens silently: compare the byte count too.
        fast = bool(np.all(lengths == width)) and sum(map(len, tokens)) == width * len(tokens)
    else:
        fast = False
    if fast:
        digits = _NIBBLE[np.frombuffer(arr.tobytes(), dtype=np.uint8).reshape(-1, width)]
        bad = np.flatnonzero((digits == 0xFF).any(axis=1))
        if bad.size:
            raise ValueError(f"word {bad[0]} is {tokens[bad[0]].decode(errors='replace')!r}, "
                             f"not a hex number (x or z bits?)")
        image = ((digits[:, 0::2] << 4) | digits[:, 1::2])[:, ::-1].reshape(-1)
    else:
        image = _parse_slow(data, data_bytes)
    if image.size < n_bytes:
        raise ValueError(f"{path} holds {image.size} bytes, fewer than the {n_bytes} asked for")
    return image[:n_bytes].tobytes()
