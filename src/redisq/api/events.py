"""Events: ``GET /events[?worker=W]``, every job's state changes as server-sent events
(events.py is the feed: one reader per coordinator, the order, how a client resumes).
Resumes after ``Last-Event-ID`` (the header an EventSource sends back, or the
``lastEventId`` query parameter for tools that cannot set headers)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..events import ResumePoint, Subscription
from .http import coordinator_of, known_worker, query_of

EVENTS_PARAMS = ("worker", "lastEventId")
# No proxy may hold the stream back or keep it (nginx buffers unless told not to).
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(StreamingResponse):
    """A subscription's events as the response body; the subscription ends with the
    response, however it ends (the client gone, the feed closed, a body never read)."""

    def __init__(self, subscription: Subscription):
        super().__init__(subscription.lines(), media_type="text/event-stream", headers=STREAM_HEADERS)
        self.subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.subscription.feed.unsubscribe(self.subscription)


async def events(request: Request) -> EventStream:
    coordinator = coordinator_of(request)
    query = query_of(request, EVENTS_PARAMS)
    workers = [known_worker(coordinator, query["worker"])] if "worker" in query else sorted(coordinator.config.workers)
    last_event_id = request.headers.get("last-event-id")
    field = "Last-Event-ID"
    if not last_event_id and query.get("lastEventId"):
        last_event_id, field = query["lastEventId"], "lastEventId"
    resume = ResumePoint.parse(last_event_id, field) if last_event_id else None
    return EventStream(await coordinator.events.subscribe(workers, resume))


routes = [
    Route("/events", events, methods=["GET"]),
]
