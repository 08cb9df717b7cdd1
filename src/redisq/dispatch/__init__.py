"""The dispatcher: claims due jobs and calls their worker URLs.

- ``claimer.py``: per worker, one claim loop. It claims as many due jobs as the worker's
  limits and this process's free in-flight slots allow (reserved before the claim), starts
  one call per job, and sleeps until the next thing can happen: the time the claim script
  says the next job or token is due, or a wake-up (``wakeups.py``: jobs due here or on
  another coordinator, a slot freed, a retry due). Throttled jobs leave within
  ``send_window`` of their claim or not at all (``ClaimLateness``).
- ``caller.py``: one HTTP call (body, signed headers) and its answer as a receipt.
- ``deadline.py``: how long a call waits for its answer: its timeout, then while its lease
  runs (heartbeats extend it).
- ``settler.py``: receipts and hold-back reports are settled in batches by one flusher per
  worker, so Redis sees a few calls per batch of jobs, not a few per job.
- ``dispatcher.py``: ``Dispatcher`` joins them, started and stopped together.
"""

from ..loops import MAX_IDLE_S, OutageBackoff
from .caller import (
    ERROR_BODY_CHARS,
    JSON_HEADERS,
    MAX_RETRY_AFTER_S,
    RESULT_MAX_BYTES,
    Caller,
    Observer,
    receipt_from_response,
    retry_after_ms,
)
from .claimer import HOLD_BACK_MIN_MS, Claimer, ClaimLateness
from .deadline import AnswerDeadline
from .dispatcher import Dispatcher
from .settler import SETTLE_BATCH, Settler, UnsentWarning

__all__ = [
    "AnswerDeadline", "Caller", "ClaimLateness", "Claimer", "Dispatcher", "ERROR_BODY_CHARS", "HOLD_BACK_MIN_MS",
    "JSON_HEADERS", "MAX_IDLE_S", "MAX_RETRY_AFTER_S", "Observer", "OutageBackoff", "RESULT_MAX_BYTES", "SETTLE_BATCH",
    "Settler", "UnsentWarning", "receipt_from_response", "retry_after_ms",
]
