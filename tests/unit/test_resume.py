"""Reading a journal back into row states, and carrying those outcomes into a resumed run's report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from test_journal import HEADER, mapped

from connector.config import Pipeline, Stream
from connector.delivery.journal import JOURNAL_FILE, Journal
from connector.delivery.journal_rows import (
    DELIVERED,
    FAILED,
    NOT_APPLIED,
    REFUSED,
    SENT,
    UNKNOWN,
    load_journal,
)
from connector.delivery.outcomes import DUP_DROPPED, DUP_RESUMED
from connector.delivery.resume import ResumeSet, find_run_dir
from connector.errors import ConfigError, SourceError
from connector.records import Chunk
from connector.report import RunReport

EVENTS = {"name": "ev", "source": {"path": "a.csv"}, "kind": "events", "identifier": {"external_id": "user_id"},
          "event": {"name": {"value": "x"}, "time": {"value": "2026-01-01T00:00:00Z"}}}  # fmt: skip
ATTRS = {"name": "us", "source": {"path": "a.csv"}, "kind": "attributes", "identifier": {"external_id": "user_id"},
         "attributes": [{"column": "user_id", "to": "uid"}]}  # fmt: skip


def stream(doc: dict[str, Any]) -> Stream:
    return Pipeline.model_validate({"name": "p", "streams": [doc]}).streams[0]


def chunk(file: str, rows: list[int]) -> Chunk:
    return Chunk(file, pa.table({"user_id": [f"u{r}" for r in rows]}), list(rows))


def journal_of_one_attempt(run_dir: Path, stream_name: str = "ev") -> None:
    """Rows 2..9 of a.csv: 2-3 delivered (3 after a dropped attempt), 4 refused, 5 failed, 6 unknown,
    7 sent with no answer, 8 not applied (a refused request), 9 never sent."""
    run_dir.mkdir(parents=True, exist_ok=True)
    m = mapped("a.csv", [2, 3, 4, 5, 6, 7, 8])
    j = Journal(run_dir / JOURNAL_FILE, {**HEADER, "pipeline": "p", "mode": "bulk"})
    r1 = j.sending(stream_name, m, [0, 1, 2])
    j.outcome(stream_name, m, [2], "R", "braze.events", "bad name")
    j.delivered(r1, m, [2], dup=True)
    j.sending(stream_name, m, [3, 4])
    j.outcome(stream_name, m, [3], "F", 503, "HTTP 503")
    j.outcome(stream_name, m, [4], "U", None, "dropped", dup=True)
    j.sending(stream_name, m, [5])  # the run was killed here
    j.sending(stream_name, m, [6])
    j.outcome(stream_name, m, [6], "N")
    j.close()


def test_every_row_gets_its_last_state(tmp_path: Path) -> None:
    journal_of_one_attempt(tmp_path)
    run = load_journal(tmp_path)
    fr = run.rows[("ev", "a.csv")]
    assert [fr.state(r) for r in range(2, 10)] == [DELIVERED, DELIVERED, REFUSED, FAILED, UNKNOWN, SENT,
                                                   NOT_APPLIED, 0]  # fmt: skip
    assert fr.detail[4] == ("braze.events", "bad name") and fr.detail[5] == (503, "HTTP 503")
    assert fr.dup == {2: DUP_DROPPED, 3: DUP_DROPPED, 6: DUP_DROPPED} and run.attempts == 1 and run.ended is None


def test_rows_the_runs_checks_rejected_and_streams_read_to_their_end_are_read_back(tmp_path: Path) -> None:
    """A stream read to its end whose every row was delivered or rejected needs no reading; one with a row
    in any other state does."""
    from connector.delivery.journal_rows import REJECTED, read_whole
    from connector.records import Rejected, RowRef

    journal_of_one_attempt(tmp_path)  # ev: rows with every state
    m = mapped("b.csv", [2, 3])
    j = Journal(tmp_path / JOURNAL_FILE, {**HEADER, "pipeline": "p"}, keep_bytes=(tmp_path / JOURNAL_FILE).stat().st_size)
    j.rejected("us", "b.csv", [Rejected(RowRef("b.csv", 4), "contract", "email.invalid", "not an email", "email")])
    j.delivered(j.sending("us", m, [0, 1]), m)
    j.read("us", 3)
    j.read("ev", 8)
    j.close()
    run = load_journal(tmp_path)
    fr = run.rows[("us", "b.csv")]
    assert [fr.state(r) for r in (2, 3, 4)] == [DELIVERED, DELIVERED, REJECTED]
    assert fr.detail[4] == ("email.invalid", "not an email", "contract", "email") and run.read == {"us": 3, "ev": 8}
    pipeline = Pipeline.model_validate({"name": "p", "streams": [EVENTS, {**ATTRS, "name": "us"}]})
    assert read_whole(run, pipeline, {"ev": {"a.csv": [0, 0]}, "us": {"b.csv": [0, 0]}}) == set()  # no sources in HEADER
    run.header["sources"] = {"ev": {"a.csv": [1, 1]}, "us": {"b.csv": [1, 1]}}
    assert read_whole(run, pipeline, {"ev": {"a.csv": [2, 2]}, "us": {"b.csv": [2, 2]}}) == {"us"}


@pytest.mark.parametrize(("on_ambiguous", "resent"), [("retry", True), ("fail", False)])
def test_carried_outcomes_go_to_the_report_and_unanswered_rows_follow_on_ambiguous(
    tmp_path: Path, on_ambiguous: str, resent: bool
) -> None:
    journal_of_one_attempt(tmp_path / "run")
    resume = ResumeSet(tmp_path / "run")
    report = RunReport("p", report_dir=tmp_path / "run")
    report.add_read(8, "ev")
    carried = resume.carry(stream(EVENTS), chunk("a.csv", list(range(2, 10))), report, on_ambiguous=on_ambiguous)
    assert carried == [True, True, True, True, True, not resent, False, False]
    assert report.rows["delivered"] == 2 and report.rows["rejected"] == 1
    assert report.rows["failed"] == (2 if resent else 3)
    assert report.by_rule == {"braze.events": 1}
    dups = dict(report.duplicated_by_reason)
    assert dups == ({DUP_DROPPED: 3, DUP_RESUMED: 1} if resent else {DUP_DROPPED: 3})
    assert resume.summary["carried"] == {"delivered": 2, "rejected": 1, "failed": 1, "unknown": 1 + (not resent)}
    assert resume.summary["resent_unanswered"] == int(resent)


def test_unanswered_attribute_sets_are_sent_again_even_with_on_ambiguous_fail(tmp_path: Path) -> None:
    journal_of_one_attempt(tmp_path / "run", stream_name="us")
    resume = ResumeSet(tmp_path / "run")
    report = RunReport("p", report_dir=tmp_path / "run")
    carried = resume.carry(stream(ATTRS), chunk("a.csv", [7]), report, on_ambiguous="fail")
    assert carried is None and report.possibly_duplicated == 1


def test_attribute_sets_left_unknown_by_a_stop_are_sent_again(tmp_path: Path) -> None:
    """A graceful stop whose grace ran out lists its unanswered rows as unknown; attribute sets are harmless
    twice, so a resume sends them again (as after a kill -9) instead of carrying them as unknown, which would
    leave a --retry-failed --include-unknown to do. Events left unknown stay unknown (test above)."""
    journal_of_one_attempt(tmp_path / "run", stream_name="us")
    resume = ResumeSet(tmp_path / "run")
    report = RunReport("p", report_dir=tmp_path / "run")
    carried = resume.carry(stream(ATTRS), chunk("a.csv", [5, 6, 7]), report, on_ambiguous="fail")
    assert carried == [True, False, False]  # 5 failed (HTTP 503): carried; 6 unknown, 7 unanswered: sent again
    assert report.possibly_duplicated == 2 and report.rows["failed"] == 1
    assert resume.summary["carried"]["unknown"] == 0 and resume.summary["resent_unanswered"] == 2


def test_rows_a_stopped_run_only_lists_are_not_marked_as_sent_again(tmp_path: Path) -> None:
    journal_of_one_attempt(tmp_path / "run")
    resume = ResumeSet(tmp_path / "run")
    report = RunReport("p", report_dir=tmp_path / "run")
    carried = resume.carry(stream(EVENTS), chunk("a.csv", [7, 9]), report, sending=False)
    assert carried == [True, False] and report.rows["failed"] == 1 and resume.summary["resent_unanswered"] == 0


def test_the_resumed_attempt_appends_and_a_later_read_sees_both(tmp_path: Path) -> None:
    journal_of_one_attempt(tmp_path / "run")
    resume = ResumeSet(tmp_path / "run")
    j = resume.open_journal({"run_id": "ignored", "pipeline": "p"})
    m = mapped("a.csv", [7, 9])
    j.resent("ev", "a.csv", [7])
    rid = j.sending("ev", m, [0, 1])
    j.delivered(rid, m)
    j.close(exit_code=0)
    again = load_journal(tmp_path / "run")
    fr = again.rows[("ev", "a.csv")]
    assert again.attempts == 2 and again.ended == {"k": "end", "exit_code": 0}
    assert again.header["run_id"] == "r1" and again.header["attempt"] == 2
    assert fr.state(7) == DELIVERED and fr.state(9) == DELIVERED and fr.dup[7] == DUP_RESUMED


def test_a_changed_source_or_another_pipeline_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "a.csv"
    src.write_text("user_id\nu1\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    header = {**HEADER, "pipeline": "p", "sources": {"ev": {str(src): [src.stat().st_size, src.stat().st_mtime_ns]}}}
    Journal(run_dir / JOURNAL_FILE, header).close()
    pipeline = Pipeline.model_validate({"name": "p", "streams": [EVENTS]})
    assert ResumeSet(run_dir).check(pipeline, {"ev": [src]}) == []
    gone = ResumeSet(run_dir).check(pipeline, {"ev": []})
    assert len(gone) == 1 and "no longer a source" in gone[0]
    with pytest.raises(ConfigError, match="of pipeline 'p', not 'q'"):
        ResumeSet(run_dir).check(pipeline.model_copy(update={"name": "q"}), {"ev": [src]})
    src.write_text("user_id\nu1\nu2\n", encoding="utf-8")
    with pytest.raises(SourceError, match="changed since run r1"):
        ResumeSet(run_dir).check(pipeline, {"ev": [src]})


def test_the_latest_run_is_found_finished_or_not(tmp_path: Path) -> None:
    pipeline = Pipeline.model_validate({"name": "p", "streams": [EVENTS],
                                        "report": {"dir": str(tmp_path / "reports" / "{pipeline}" / "{run_id}")}})  # fmt: skip
    with pytest.raises(ConfigError, match="no run of pipeline p"):
        find_run_dir(pipeline, None)
    for name, started in (("b", "2026-01-02T00:00:00+00:00"), ("a", "2026-01-03T00:00:00+00:00")):
        d = tmp_path / "reports" / "p" / name
        d.mkdir(parents=True)
        Journal(d / JOURNAL_FILE, {**HEADER, "started": started}).close(exit_code=0)
    assert find_run_dir(pipeline, None).name == "a"
    killed = tmp_path / "reports" / "p" / "c"  # killed before its first record was written
    killed.mkdir()
    (killed / JOURNAL_FILE).write_bytes(b"")
    future = time.time() + 86400 * 3650
    os.utime(killed / JOURNAL_FILE, (future, future))
    assert find_run_dir(pipeline, None).name == "c"
    assert ResumeSet(killed).journal.attempts == 0
    assert find_run_dir(pipeline, tmp_path / "reports" / "p" / "b").name == "b"


def test_a_chunk_the_journal_does_not_know_is_not_carried(tmp_path: Path) -> None:
    journal_of_one_attempt(tmp_path / "run")
    report = RunReport("p", report_dir=tmp_path / "run")
    assert ResumeSet(tmp_path / "run").carry(stream(EVENTS), chunk("b.csv", [2, 3]), report) is None
    assert report.rows["delivered"] == 0


def test_a_new_run_is_told_when_the_last_one_did_not_finish(tmp_path: Path) -> None:
    """check_unfinished: only the latest run counts, only one without an end record, only its own partition."""
    from connector.delivery.unfinished import check_unfinished

    def unfinished_warning(pipeline: Pipeline, report_dir: None, partition: str | None) -> str | None:
        found = check_unfinished(pipeline, report_dir, partition, {})
        return found.warning if found is not None else None

    pipeline = Pipeline.model_validate({"name": "p", "streams": [EVENTS],
                                        "report": {"dir": str(tmp_path / "r" / "{run_id}")}})  # fmt: skip
    assert unfinished_warning(pipeline, None, None) is None  # no run yet

    def attempt(run_id: str, started: str, *, end: bool, in_flight: int = 0) -> Path:
        d = tmp_path / "r" / run_id
        d.mkdir(parents=True)
        j = Journal(d / JOURNAL_FILE, {**HEADER, "run_id": run_id, "started": started})
        m = mapped("a.csv", list(range(2, 2 + max(in_flight, 1))))
        if in_flight:
            j.sending("ev", m, list(range(in_flight)))
        j.close(exit_code=0 if end else None)
        return d

    attempt("20260101T000000Z-aaaaaa", "2026-01-01T00:00:00+00:00", end=False, in_flight=2)
    attempt("20260102T000000Z-bbbbbb", "2026-01-02T00:00:00+00:00", end=True)
    assert unfinished_warning(pipeline, None, None) is None  # the older one was killed, the latest finished
    killed = attempt("20260103T000000Z-cccccc", "2026-01-03T00:00:00+00:00", end=False, in_flight=3)
    w = unfinished_warning(pipeline, None, None)
    assert w is not None and "20260103T000000Z-cccccc" in w and "3 row(s) it had sent" in w
    assert f"--resume {killed}" in w
    other = attempt("20260104T000000Z-dddddd-p2of2", "2026-01-04T00:00:00+00:00", end=False, in_flight=1)
    w = unfinished_warning(pipeline, None, None)  # a partition's run is not the unpartitioned run's business
    assert w is not None and f"--resume {killed}" in w
    w = unfinished_warning(pipeline, None, "p2of2")
    assert w is not None and f"--resume {other}" in w
    assert unfinished_warning(pipeline, None, "p1of2") is None
    attempt("20260105T000000Z-eeeeee-p1of2", "2026-01-05T00:00:00+00:00", end=True)
    attempt("20260101T000000Z-ffffff-p1of2", "2026-01-01T00:00:00+00:00", end=False, in_flight=1)
    assert unfinished_warning(pipeline, None, "p1of2") is None  # its latest run finished
    attempt("20260106T000000Z-abcdef", "2026-01-06T00:00:00+00:00", end=False)  # killed with nothing in flight
    assert unfinished_warning(pipeline, None, None) is None


def test_a_plain_rerun_over_the_same_files_is_refused_only_for_streams_that_add_up(tmp_path: Path) -> None:
    """check_unfinished: the killed run's delivered and unanswered rows of a stateless events stream would be
    applied again by a plain re-run over the same, unchanged file (refused); of an events stream with state,
    only its unanswered rows (its state never recorded them: refused too); attribute sets (idempotent) and a
    changed file are not (warned at most)."""
    from connector.delivery.resume import fingerprints
    from connector.delivery.unfinished import check_unfinished

    src = tmp_path / "a.csv"
    src.write_text("user_id\nu1\n", encoding="utf-8")

    def killed(stream_name: str, hex6: str) -> Path:
        d = tmp_path / "r" / f"20260103T000000Z-{hex6}"
        d.mkdir(parents=True)
        j = Journal(d / JOURNAL_FILE, {**HEADER, "run_id": d.name, "started": "2026-01-03T00:00:00+00:00",
                                       "sources": fingerprints({stream_name: [src]})})  # fmt: skip
        m = mapped(str(src), [2, 3, 4])
        j.delivered(j.sending(stream_name, m, [0, 1]), m, [])
        j.sending(stream_name, m, [2])  # in flight when the run was killed
        j.close()
        return d

    def pipeline(doc: dict[str, Any]) -> Pipeline:
        return Pipeline.model_validate({"name": "p", "streams": [{**doc, "source": {"path": str(src)}}],
                                        "report": {"dir": str(tmp_path / "r" / "{run_id}")}})  # fmt: skip

    run = killed("ev", "aaaaaa")
    found = check_unfinished(pipeline(EVENTS), None, None, {"ev": [src]})
    assert found is not None and found.killed and found.twice == {"ev": 3}  # 2 delivered + 1 in flight
    refusal = found.refusal(pipeline(EVENTS))
    assert f"--resume {run}" in refusal and "ev (3 row(s))" in refusal and "--ignore-unfinished" in refusal
    for state in ({"incremental": {"cursor": "user_id"}}, {"delta": True}):
        kept = pipeline({**EVENTS, **state})
        found = check_unfinished(kept, None, None, {"ev": [src]})
        assert found is not None and found.twice == {"ev": 1} and "did not finish" in found.warning  # in flight
        said = found.refusal(kept)
        assert "ev (1 row(s))" in said and "the state of ev never recorded the rows that run sent" in said
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))  # tonight's export: another file
    changed = check_unfinished(pipeline(EVENTS), None, None, {"ev": [src]})
    assert changed is not None and changed.twice == {}  # warned, not refused, and not sent to a --resume
    assert f"cannot be resumed: {src} changed since" in changed.warning and "--resume" not in changed.warning
    (run / JOURNAL_FILE).unlink()
    run.rmdir()
    killed("us", "bbbbbb")
    attrs = check_unfinished(pipeline(ATTRS), None, None, {"us": [src]})
    assert attrs is not None and attrs.twice == {} and "1 row(s) it had sent" in attrs.warning
    assert "only sets the same attributes again" in attrs.warning and "count twice" not in attrs.warning


def test_a_changed_file_of_a_delta_stream_is_refused_naming_why_it_is_read_again(tmp_path: Path) -> None:
    """A delta stream is read again by every resume (its state follows its rows), however fully the stopped run
    delivered it; the refusal says so instead of "still has rows to read or send"."""
    src = tmp_path / "a.csv"
    src.write_text("user_id\nu1\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    header = {**HEADER, "pipeline": "p", "sources": {"us": {str(src): [src.stat().st_size, src.stat().st_mtime_ns]}}}
    Journal(run_dir / JOURNAL_FILE, header).close()
    pipeline = Pipeline.model_validate({"name": "p", "streams": [{**ATTRS, "delta": True}]})
    src.write_text("user_id\nu1\nu2\n", encoding="utf-8")
    with pytest.raises(SourceError, match="stream us keeps delta state that follows its rows, so a resume always"):
        ResumeSet(run_dir).check(pipeline, {"us": [src]})
