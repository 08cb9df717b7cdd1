"""``WorkerEngine``: everything the engine does for one worker, on that worker's keys (one
hash slot), as BullMQ's ``Scripts(prefix, queueName)`` and saq's ``Queue(name)`` are bound
to one queue."""

from __future__ import annotations

from .jobs import Jobs
from .limits import LiveLimits
from .listings import Listings
from .schedules import Schedules


class WorkerEngine(Jobs, LiveLimits, Schedules, Listings):
    """One worker's jobs (``jobs.py``), live limits (``limits.py``), schedules
    (``schedules.py``) and listings (``listings.py``), sharing its keys, client and
    scripts (``base.py``)."""
