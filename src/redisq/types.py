"""The type aliases that modules share (as starlette keeps its own in one ``types.py``).

The Redis client itself is ``connection.RedisClient``; these name what goes to it and what
comes back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

# What the engine passes a script in ARGV; redis-py sends each as its text.
ScriptArg: TypeAlias = str | int | float

# What a Lua script answers, as redis-py reads it (responses are not decoded): a string as
# bytes, a number as an int, a table as a list of replies, nil (and false) as None.
ScriptReply: TypeAlias = bytes | int | list["ScriptReply"] | None

# A hash as the engine reads it: from HGETALL (bytes, or str by redis-py's types), or
# already decoded from a script's flat [field, value, ...] reply (``engine.records.fields_of``).
RedisHash: TypeAlias = Mapping[str, str] | Mapping[bytes | str, bytes | str]
