"""InFlight (connector.delivery.inflight): each request's outcome is owned by its worker or by the give-up."""

from __future__ import annotations

from connector.delivery.batching import Request
from connector.delivery.inflight import InFlight


def req(name: str) -> Request:
    return Request(name, b"{}", [])


def test_the_worker_owns_an_answer_that_came_back_in_time() -> None:
    f = InFlight()
    ticket = f.begin("batch", req("a"), [])
    assert ticket is not None and len(f) == 1
    assert f.end(ticket) is True
    assert f.take_over() == [] and len(f) == 0


def test_give_up_takes_the_requests_on_the_wire_with_what_their_jobs_had_left() -> None:
    f = InFlight()
    rest = [req("a2"), req("a3")]
    t1 = f.begin("b1", req("a1"), rest)
    t2 = f.begin("b2", req("b"), [])
    assert t1 is not None and t2 is not None
    assert f.end(t2) is True  # answered before the give-up
    [g] = f.take_over()
    assert g.batch == "b1" and g.request.endpoint == "a1" and [r.endpoint for r in g.rest] == ["a2", "a3"]
    assert rest == []  # the worker finds nothing left to send
    assert f.end(t1) is False  # a late answer is not the worker's to record
    assert f.begin("b3", req("c"), []) is None  # nothing new goes on the wire
