"""JSON in and out of the API at native speed, with the standard library's exact answers.

msgspec reads a request body in less time than ``json.loads`` takes and writes a job's args
in a fraction of ``json.dumps``'s. Neither may change what a caller sees, so each is used
only where its answer is the standard library's, byte for byte (``tests/test_json_text.py``
compares them on generated values). orjson was measured too: it reads a little faster,
but it reads an integer between 2**63 and 2**64 as a float, where msgspec and ``json`` keep
every digit.

- ``read_json_text``: msgspec's value when it can read the body; otherwise (``NaN``,
  ``1e400``, a lone surrogate, or JSON that is not valid) ``json.loads`` reads it, and its
  value or its error message is the answer, as before.
- ``compact_json``: msgspec's text when it is what ``COMPACT_JSON`` writes: when it holds
  no character ``COMPACT_JSON`` escapes (non-ASCII, DEL), no float (Python writes floats
  in forms of its own: ``1e+16``, ``6.103515625e-05``) and no null (msgspec writes NaN as
  null); else ``COMPACT_JSON`` writes it, refusing NaN as it always did. Args of strings,
  integers and booleans, the common case, take the fast path.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# A float (every float's text has a digit then "." or "e"; a string that looks like one just
# goes to COMPACT_JSON too): Python writes floats in its own forms (6.103515625e-05, where
# msgspec and orjson write 0.00006103515625)
_FLOAT = re.compile(rb"[0-9][.eE]")
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def read_json_text(body: bytes | bytearray) -> Any:
    """``json.loads(body)``: the same value, the same errors."""
    try:
        return _decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return json.loads(body)


def compact_json(value: Any) -> str:
    """``COMPACT_JSON.encode(value)``: the same text, the same errors."""
    try:
        text = _encode(value)
    except (TypeError, ValueError, OverflowError):  # a key that is not a string, say
        return COMPACT_JSON.encode(value)
    if text.isascii() and b"\x7f" not in text and not _FLOAT.search(text) and b"null" not in text:
        return text.decode()
    return COMPACT_JSON.encode(value)
