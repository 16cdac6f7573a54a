"""Masking of the report's samples: identifiers, emails and phones by default; rejects.csv stays whole."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from connector import load_pipeline, run_pipeline
from connector.config import Stream
from connector.report.masking import columns_to_mask, mask_sample, mask_value


def stream(**extra: object) -> Stream:
    doc = {"name": "s", "source": {"path": "x.csv"}, "kind": "attributes",
           "identifier": {"user_alias": {"name": "alias_col", "label": "label_col"}},
           "attributes": [{"column": "mail", "to": "email"}, {"column": "Work_Phone"}, {"column": "age"},
                          {"column": "cell", "to": "phone"}]}  # fmt: skip
    doc.update(extra)
    return Stream.model_validate(doc)


def test_default_columns_are_identifiers_emails_and_phones() -> None:
    assert columns_to_mask(stream(), None) == {"alias_col", "label_col", "mail", "Work_Phone", "cell"}
    assert columns_to_mask(stream(), ["age"]) == {"age"}
    assert columns_to_mask(stream(), []) == frozenset()


def test_masked_values_keep_their_shape_only() -> None:
    assert mask_value("alice@example.com") == "a" + "*" * 15 + "m"
    assert mask_value("u12") == "***"
    entry = {"column": "email", "value": "not-an-email", "reason": "'not-an-email' is not an email address"}
    out = mask_sample(entry, frozenset({"email"}))
    assert out["value"] == "n**********l" and "not-an-email" not in out["reason"]
    assert mask_sample(entry, frozenset({"age"})) is entry  # another column: unchanged
    raw = {"column": None, "value": "u9,z@example.com,1,extra", "reason": "4 fields, expected 3"}
    assert mask_sample(raw, frozenset({"email"}))["value"] == "(line of 24 characters, masked)"
    assert mask_sample(raw, frozenset()) is raw  # masking off: the line is shown


def test_a_long_value_the_reason_quotes_cut_short_is_masked_there_too() -> None:
    value = "jane.doe.secret.person" + "y" * 300 + "@bigcorp.com"
    entry = {"column": "email", "value": value, "reason": f"email '{value[:40]}...' is not a valid address"}
    out = mask_sample(entry, frozenset({"email"}))
    assert "jane.doe.secret" not in out["reason"] and "jane.doe.secret" not in out["value"]
    assert out["reason"].endswith("...' is not a valid address")


def test_report_html_and_json_samples_are_masked_but_rejects_csv_is_not(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("user_id,email,age\nu1,bad-email-x,31\nsecret-id-77,c@example.com,x\n")
    doc = {"name": "mask", "report": {"max_reject_fraction": 1.0},
           "streams": [{"name": "u", "source": {"path": "u.csv"}, "kind": "attributes",
                        "identifier": {"external_id": "user_id"},
                        "attributes": [{"column": "email"}, {"column": "age", "type": "integer"}]}]}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    report = run_pipeline(load_pipeline(tmp_path / "p.yaml"), validate_only=True, report_dir=tmp_path / "out", env={})
    sample = json.loads((report.report_dir / "report.json").read_text())["rejects"]["sample"]
    by_rule = {s["rule"]: s for s in sample}
    assert by_rule["email.invalid"]["value"] == "b*********x"
    html = (report.report_dir / "report.html").read_text(encoding="utf-8")
    assert "bad-email-x" not in html and "b*********x" in html
    assert "bad-email-x" in (report.report_dir / "rejects.csv").read_text()  # the data to fix stays whole
    assert by_rule["cast.integer"]["value"] == "x"  # age is not personal: shown
