"""The HTTP API: a Starlette app whose routes call the engine, with errors as status codes.

One module per resource, each with its endpoints and a ``routes`` list: ``jobs``,
``receipts``, ``workers``, ``schedules``, ``health``, ``metrics``, ``openapi`` (the
document of all of them) and ``docs`` (its page); ``http`` holds what they share and
``app`` puts them together in ``create_app``. Endpoints find the coordinator on
``request.app.state``.

Every error body is ``{"error": "<what was wrong>"}`` plus ``field``/``index`` where they
apply (see ``errors.py`` for the status of each). Bodies are read up to
``max_body_bytes``; nothing is written unless the whole request is valid.
"""

from .app import create_app
from .http import error_response, job_response, read_json
from .jobs import MAX_BATCH
from .receipts import RECEIPT_FIELDS, parse_receipt

__all__ = ["MAX_BATCH", "RECEIPT_FIELDS", "create_app", "error_response", "job_response", "parse_receipt",
           "read_json"]
