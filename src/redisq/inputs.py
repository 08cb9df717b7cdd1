"""What a number in a request may be: one rule for every JSON number field of the API.

Python's JSON parser hands over any integer, however long (``1e400`` as an integer of 401
digits, which no float can hold), and reads ``NaN``, ``Infinity`` and ``1e400`` as floats
that are not finite. A ``NumberRule`` accepts only a finite number within its bounds,
compares before it converts (so a huge integer is refused, never overflowed), and says
what it wants in one message: ``must be a number of seconds > 0 and <= 604800, got 0``.
``read`` raises it as the 422 that names the field (and a batch item's index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError, shown

# The most any count, rate, burst or cost may be: far beyond any real limit, and a whole
# number that Lua's doubles (and Redis's) hold exactly.
MAX_AMOUNT = 1_000_000_000


def bound_text(value: float) -> str:
    """A bound as the message shows it: 604800, 1000000000, 253402300799.999."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(frozen=True)
class NumberRule:
    """A JSON number from ``low`` (excluded with ``above_low``) to ``high``; ``whole`` wants
    an integer (a JSON integer, not ``2.0``); ``unit`` names what it counts in messages."""

    low: float
    high: float
    above_low: bool = False
    whole: bool = False
    unit: str = ""
    nullable: bool = False  # for the message only: null is handled by the caller

    @property
    def kind(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        return f"{kind} of {self.unit}" if self.unit else kind

    @property
    def wanted(self) -> str:
        low = f"{'>' if self.above_low else '>='} {bound_text(self.low)}"
        return f"{self.kind} {low} and <= {bound_text(self.high)}{' or null' if self.nullable else ''}"

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        # int against float compares exactly, however long the int: no conversion here
        return (self.low < value if self.above_low else self.low <= value) and value <= self.high

    def check(self, value: Any) -> float:
        """``value`` as a float when the rule admits it; ValueError("must be ..., got ...")."""
        if not self.admits(value):
            raise ValueError(f"must be {self.wanted}, got {shown(value)}")
        return float(value)

    def read(self, value: Any, field: str, index: int | None = None) -> float:
        """``check`` for a request's ``field`` (of item ``index`` of a ``POST /jobs`` batch):
        a ValidationError naming it when the rule does not admit the value."""
        try:
            return self.check(value)
        except ValueError as e:
            where = "" if index is None else f"jobs[{index}]."
            raise ValidationError(f"{where}{field}: {e}", field=field, index=index) from None


TIMEOUT_S = NumberRule(0, 7 * 86400, above_low=True, unit="seconds")  # a job's or a worker's timeout


def object_with(body: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """``body`` when it is a JSON object of only ``fields``; else the 422 that says so,
    naming the first unknown field."""
    if not isinstance(body, dict):
        raise ValidationError("body: must be a JSON object")
    unknown = [k for k in body if k not in fields]
    if unknown:
        raise ValidationError(f"{unknown[0]}: unknown field (expected {', '.join(fields)})", field=unknown[0])
    return body
