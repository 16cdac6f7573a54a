"""contract.check_object: a passing and a failing object for every rule."""

from __future__ import annotations

from typing import Any

import pytest

from connector.contract import CURRENCIES, Violation, check_object

T = "2024-01-02T03:04:05.000Z"
EV: dict[str, Any] = {"external_id": "u1", "name": "played", "time": T}
PU: dict[str, Any] = {"external_id": "u1", "product_id": "sku", "currency": "USD", "price": 9.5, "time": T}
LA: dict[str, Any] = {"app_id": "a", "activity_id": "act", "content_state": {"score": 1}}
ALIAS = {"alias_name": "n", "alias_label": "l"}


def _with(base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in kw.items():
        if v is ...:
            out.pop(k, None)
        else:
            out[k] = v
    return out


# (rule, kind, passing object, failing object)
SG = "3d1e6b4c-0f2a-4c1e-9a7b-5e8d2f6c1a90"
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("identifier.missing", "attributes", {"external_id": "u1", "a": 1}, {"a": 1}),
    (
        "identifier.missing",
        "attributes",
        {"user_alias": {"alias_name": "n", "alias_label": "l"}},
        {"user_alias": {"alias_name": "n"}},
    ),
    (
        "identifier.multiple",
        "attributes",
        {"external_id": "u1", "email": "a@b.co"},
        {"external_id": "u1", "braze_id": "b1"},
    ),
    ("external_id.too_long", "attributes", {"external_id": "é" * 493}, {"external_id": "é" * 494}),
    (
        "string.too_long",
        "attributes",
        {"external_id": "u", "s": "x" * 255},
        {"external_id": "u", "s": "x" * 256},
    ),
    (
        "string.too_long",
        "events",
        _with(EV, properties={"p": "x" * 255}),
        _with(EV, properties={"p": "x" * 256}),
    ),
    ("string.too_long", "events", _with(EV, name="n" * 255), _with(EV, name="n" * 256)),
    ("string.too_long", "purchases", _with(PU, product_id="p" * 255), _with(PU, product_id="p" * 256)),
    ("key.invalid", "attributes", {"external_id": "u", "k": 1}, {"external_id": "u", "$k": 1}),
    ("key.invalid", "attributes", {"external_id": "u", "k" * 255: 1}, {"external_id": "u", "k" * 256: 1}),
    ("key.invalid", "events", _with(EV, properties={"a": 1}), _with(EV, properties={"": 1})),
    ("key.reserved", "events", _with(EV, properties={"price": 1}), _with(EV, properties={"event_name": 1})),
    ("key.reserved", "purchases", _with(PU, properties={"name": 1}), _with(PU, properties={"quantity": 1})),
    ("event.name_missing", "events", EV, _with(EV, name=...)),
    ("event.name_missing", "events", EV, _with(EV, name="  ")),
    ("time.missing", "events", EV, _with(EV, time=...)),
    ("time.invalid", "events", _with(EV, time="2024-01-02T03:04:05+01:00"), _with(EV, time="yesterday")),
    ("time.invalid", "purchases", _with(PU, time="2024-01-02"), _with(PU, time="2024-1-2")),
    (
        "time.invalid",
        "events",
        _with(EV, time="2024-02-29T10:00:00Z"),
        _with(EV, time="2023-02-29T10:00:00Z"),
    ),
    (
        "time.invalid",
        "events",
        _with(EV, time="2024-01-02 23:59:59 +0100"),
        _with(EV, time="2024-01-02 24:00:00"),
    ),
    (
        "time.invalid",
        "events",
        _with(EV, time="2024-01-02T03:04:05:123Z"),
        _with(EV, time="2024-01-02T03:04:05+01:60"),
    ),
    ("time.invalid", "events", _with(EV, time="12/31/2023"), _with(EV, time="31/12/2023")),
    (
        "time.invalid",
        "events",
        _with(EV, time="2024-01-02T03:04:05 Z"),
        _with(EV, time="2024-01-02T03:04:05.1 Z"),
    ),
    ("purchase.product_id_missing", "purchases", PU, _with(PU, product_id=...)),
    ("purchase.currency", "purchases", _with(PU, currency="EUR"), _with(PU, currency="usd")),
    ("purchase.currency", "purchases", _with(PU, currency="JPY"), _with(PU, currency="ABC")),
    ("purchase.price", "purchases", _with(PU, price=-3), _with(PU, price="9.5")),
    ("purchase.price", "purchases", _with(PU, price=0.0), _with(PU, price=float("nan"))),
    ("purchase.quantity", "purchases", _with(PU, quantity=100), _with(PU, quantity=101)),
    ("purchase.quantity", "purchases", _with(PU, quantity=1), _with(PU, quantity=1.5)),
    (
        "properties.too_large",
        "events",
        _with(EV, properties={"o": {"s": ["x" * 200] * 400}}),
        _with(EV, properties={"o": {"s": ["x" * 200] * 600}}),
    ),
    (
        "properties.too_large",
        "purchases",
        _with(PU, properties={"o": ["x" * 200] * 200}),
        _with(PU, properties={"o": ["x" * 200] * 300}),
    ),
    (
        "properties.too_many",
        "events",
        _with(EV, properties={f"p{i}": i for i in range(256)}),
        _with(EV, properties={f"p{i}": i for i in range(257)}),
    ),
    ("email.invalid", "attributes", {"email": "a.b@x.example"}, {"email": "a b@x.example"}),
    (
        "email.invalid",
        "attributes",
        {"external_id": "u", "email": "a@b.co"},
        {"external_id": "u", "email": "a@b"},
    ),
    ("phone.invalid", "attributes", {"phone": "+14155550100"}, {"phone": "4155550100"}),
    (
        "standard_field.gender",
        "attributes",
        {"external_id": "u", "gender": "F"},
        {"external_id": "u", "gender": "female"},
    ),
    (
        "standard_field.dob",
        "attributes",
        {"external_id": "u", "dob": "1980-12-31"},
        {"external_id": "u", "dob": "31/12/1980"},
    ),
    (
        "standard_field.dob",
        "attributes",
        {"external_id": "u", "dob": "2024-02-29"},
        {"external_id": "u", "dob": "2023-02-29"},
    ),
    (
        "standard_field.dob",
        "attributes",
        {"external_id": "u", "dob": "2023-04-30"},
        {"external_id": "u", "dob": "2023-02-30"},
    ),
    (
        "standard_field.dob",
        "attributes",
        {"external_id": "u", "dob": "0001-01-01"},
        {"external_id": "u", "dob": "0000-01-01"},
    ),
    (
        "standard_field.dob",
        "attributes",
        {"external_id": "u", "dob": "1980-12-31"},
        {"external_id": "u", "dob": "1980-12-31\n"},
    ),
    (
        "standard_field.dob",
        "canvas_trigger",
        {"external_user_id": "u", "attributes": {"dob": "1980-12-31"}},
        {"external_user_id": "u", "attributes": {"dob": {"inc": 1}}},  # an object is no date either
    ),
    (
        "standard_field.gender",
        "attributes",
        {"external_id": "u", "gender": None},
        {"external_id": "u", "gender": ["F"]},
    ),
    (
        "standard_field.email_subscribe",
        "attributes",
        {"external_id": "u", "email_subscribe": "opted_in"},
        {"external_id": "u", "email_subscribe": "yes"},
    ),
    (
        "standard_field.email_subscribe",
        "attributes",
        {"external_id": "u", "email_subscribe": "subscribed"},
        {"external_id": "u", "email_subscribe": {"add": ["subscribed"]}},
    ),
    (
        "standard_field.current_location",
        "attributes",
        {"external_id": "u", "current_location": {"longitude": -73.99, "latitude": 40.75}},
        {"external_id": "u", "current_location": [-73.99, 40.75]},
    ),
    (
        "standard_field.push_tokens",
        "attributes",
        {"external_id": "u", "push_tokens": [{"app_id": "a", "token": "t", "device_id": "d" * 8}]},
        {"external_id": "u", "push_tokens": [{"app_id": "a", "token": "t", "device_id": "d" * 7}]},
    ),
    (
        "standard_field.push_tokens",
        "attributes",
        {"external_id": "u", "push_tokens": [{"app_id": "a", "token": "t"}]},
        {"external_id": "u", "push_tokens": [{"app_id": "a"}]},
    ),
    (
        "standard_field.push_tokens",
        "attributes",
        {"external_id": "u", "push_tokens": []},
        {"external_id": "u", "push_tokens": {"app_id": "a", "token": "t"}},
    ),
    (
        "standard_field.subscription_groups",
        "attributes",
        {
            "external_id": "u",
            "subscription_groups": [{"subscription_group_id": SG, "subscription_state": "unsubscribed"}],
        },
        {
            "external_id": "u",
            "subscription_groups": [{"subscription_group_id": SG, "subscription_state": "opted_in"}],
        },
    ),
    (
        "standard_field.subscription_groups",
        "attributes",
        {
            "external_id": "u",
            "subscription_groups": [{"subscription_group_id": SG, "subscription_state": "subscribed"}],
        },
        {"external_id": "u", "subscription_groups": [{"subscription_state": "subscribed"}]},
    ),
    (
        "standard_field.subscription_groups",
        "attributes",
        {"external_id": "u", "subscription_groups": [{"subscription_group_id": SG.upper(), "subscription_state": "subscribed"}]},
        {"external_id": "u", "subscription_groups": [{"subscription_group_id": "newsletter", "subscription_state": "subscribed"}]},
    ),
    (
        "canvas.subscription_groups",
        "canvas_trigger",
        {"external_user_id": "u", "attributes": {"first_name": "A"}},
        {"external_user_id": "u", "attributes": {"subscription_groups": [{"subscription_group_id": SG, "subscription_state": "subscribed"}]}},
    ),
    (
        "array.too_long",
        "attributes",
        {"external_id": "u", "tags": [f"t{i % 500}" for i in range(700)]},
        {"external_id": "u", "tags": [f"t{i}" for i in range(501)]},
    ),
    (
        "array.too_long",
        "attributes",
        {"external_id": "u", "tags": ["x" * 200] * 400},
        {"external_id": "u", "tags": [f"{i:03d}" + "x" * 250 for i in range(450)]},
    ),
    (
        "live_activity.notification",
        "live_activity",
        _with(LA, notification={"alert": "Goal!", "extra": {"match": "m1"}}),
        _with(LA, notification="Goal!"),
    ),
    (
        "live_activity.notification",
        "live_activity",
        _with(LA, notification={"alert": "Goal!"}),
        _with(LA, notification={"alert": "Goal!", "extra": "m1"}),
    ),
    (
        "live_activity.notification",
        "live_activity",
        _with(LA, notification={"alert": "Goal!", "extra": {"k": "v"}}),
        _with(LA, notification={"alert": "Goal!", "extra": {"aps": {}}}),
    ),
    (
        "live_activity.notification",
        "live_activity",
        _with(LA, notification={"alert": "x" * 1890}),  # 1,902 bytes as compact JSON
        _with(LA, notification={"alert": "x" * 1901}),
    ),
    (
        "standard_field.push_subscribe",
        "attributes",
        {"external_id": "u", "push_subscribe": "unsubscribed"},
        {"external_id": "u", "push_subscribe": True},
    ),
    (
        "standard_field.country",
        "attributes",
        {"external_id": "u", "country": "FR"},
        {"external_id": "u", "country": "France"},
    ),
    (
        "standard_field.current_location",
        "attributes",
        {"external_id": "u", "current_location": {"longitude": 1.5, "latitude": 2}},
        {"external_id": "u", "current_location": {"longitude": 1.5}},
    ),
    (
        "nested.invalid",
        "attributes",
        {"external_id": "u", "o": {"a_b": {"$time": "2020-01-01"}}},
        {"external_id": "u", "o": {"a b": 1}},
    ),
    (
        "nested.invalid",
        "attributes",
        {"external_id": "u", "o": {"ab": 1}},
        {"external_id": "u", "o": {"a.b": 1}},
    ),
    (
        "nested.invalid",
        "attributes",
        {"external_id": "u", "o": {"ab": 1}},
        {"external_id": "u", "o": {"x": [{"$bad": 1}]}},
    ),
    (
        "nested.invalid",
        "attributes",
        {"external_id": "u", "o": {"k": ["x" * 200] * 400}},
        {"external_id": "u", "o": {"k": ["x" * 200] * 600}},
    ),
    (
        "nested.invalid",
        "events",
        _with(EV, properties={"o": {"a": 1}}),
        _with(EV, properties={"o": {"a.b": 1}}),
    ),
    (
        "canvas.context_too_large",
        "canvas_trigger",
        {"external_user_id": "u", "context": {"k": "x" * 200}},
        {"external_user_id": "u", "context": {f"k{i}": "x" * 250 for i in range(220)}},
    ),
    ("identifier.missing", "canvas_trigger", {"braze_id": "b"}, {"context": {"a": 1}}),
    (
        "identifier.multiple",
        "canvas_trigger",
        {"external_user_id": "u"},
        {"external_user_id": "u", "braze_id": "b"},
    ),
    (
        "canvas.prioritization_missing",
        "canvas_trigger",
        {"email": "a@b.co", "prioritization": ["identified"]},
        {"email": "a@b.co"},
    ),
    (
        "canvas.attributes_missing",
        "canvas_trigger",
        {"external_user_id": "u", "send_to_existing_only": False, "attributes": {"a": 1}},
        {"external_user_id": "u", "send_to_existing_only": False},
    ),
    (
        "canvas.alias_send_to_existing_only",
        "canvas_trigger",
        {"user_alias": ALIAS, "attributes": {"a": 1}},
        {"user_alias": ALIAS, "send_to_existing_only": False, "attributes": {"a": 1}},
    ),
    (
        "canvas.alias_send_to_existing_only",
        "canvas_trigger",
        {"external_user_id": "u", "send_to_existing_only": True},
        {"user_alias": ALIAS, "send_to_existing_only": True},  # "can't be used with user aliases" at all
    ),
    (
        "canvas.prioritization_invalid",
        "canvas_trigger",
        {"email": "a@b.co", "prioritization": ["unidentified", "least_recently_updated"]},
        {"email": "a@b.co", "prioritization": ["identified", "newest"]},
    ),
    (
        "canvas.prioritization_invalid",
        "canvas_trigger",
        {"email": "a@b.co", "prioritization": ["identified", "most_recently_updated"]},
        {"email": "a@b.co", "prioritization": ["identified", "unidentified"]},
    ),
    (
        "canvas.prioritization_invalid",
        "canvas_trigger",
        {"email": "a@b.co", "prioritization": ["most_recently_updated"]},
        {"email": "a@b.co", "prioritization": "most_recently_updated"},
    ),
    (
        "canvas.prioritization_invalid",
        "canvas_trigger",
        {"external_user_id": "u", "prioritization": ["identified"]},
        {"external_user_id": "u", "prioritization": ["everyone"]},
    ),
    (
        "canvas.context_too_large",
        "canvas_trigger",
        {"external_user_id": "u", "canvas_entry_properties": {"k": "x" * 200}},
        {"external_user_id": "u", "canvas_entry_properties": {f"k{i}": "x" * 250 for i in range(220)}},
    ),
    (
        "nested.invalid",
        "canvas_trigger",
        {"external_user_id": "u", "trigger_properties": {"k": 1}},
        {"external_user_id": "u", "trigger_properties": ["k"]},
    ),
    (
        "email.invalid",
        "canvas_trigger",
        {"external_user_id": "u", "attributes": {"email": "a@b.co"}},
        {"external_user_id": "u", "attributes": {"email": "a@b"}},
    ),
    (
        "email.invalid",
        "canvas_trigger",
        {"email": "a" * 249 + "@b.com", "prioritization": ["identified"]},
        {"email": "a" * 250 + "@b.com", "prioritization": ["identified"]},
    ),
    (
        "email.invalid",
        "attributes",
        {"external_id": "u", "email": "a" * 249 + "@b.com"},
        {"external_id": "u", "email": "a" * 250 + "@b.com"},
    ),
    ("live_activity.missing_field", "live_activity", LA, _with(LA, app_id=...)),
    ("live_activity.missing_field", "live_activity", LA, _with(LA, content_state=...)),
    ("time.invalid", "live_activity", _with(LA, stale_date=T), _with(LA, stale_date="soon")),
    (
        "time.invalid",
        "live_activity",
        _with(LA, dismissal_date="2024-02-29"),
        _with(LA, dismissal_date="2023-02-30"),
    ),
    (
        "standard_field.number",
        "attributes",
        {"external_id": "u", "n": 1.5},
        {"external_id": "u", "n": float("nan")},
    ),
    (
        "standard_field.number",
        "attributes",
        {"external_id": "u", "n": -2.0},
        {"external_id": "u", "n": float("inf")},
    ),
]


@pytest.mark.parametrize(
    ("rule", "kind", "good", "bad"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rule_passes_and_fails(rule: str, kind: str, good: dict[str, Any], bad: dict[str, Any]) -> None:
    assert check_object(kind, good) == []  # type: ignore[arg-type]
    found = check_object(kind, bad)  # type: ignore[arg-type]
    assert rule in [v.rule for v in found], found
    assert all(isinstance(v, Violation) and v.reason for v in found)


def test_violation_is_frozen() -> None:
    v = Violation("a", "b", "c")
    with pytest.raises(AttributeError):
        v.rule = "x"  # type: ignore[misc]


def test_currency_list_is_iso_4217() -> None:
    assert isinstance(CURRENCIES, frozenset) and {"USD", "EUR", "GBP", "JPY", "CHF"} <= CURRENCIES
    assert all(len(c) == 3 and c.isupper() for c in CURRENCIES)
    assert len(CURRENCIES) > 150


def test_invalid_key_reported_every_time_despite_cache() -> None:
    for _ in range(3):
        assert [v.rule for v in check_object("attributes", {"external_id": "u", "$x": 1})] == ["key.invalid"]
    assert check_object("attributes", {"external_id": "u", "x": 1}) == []


def test_email_and_phone_are_attributes_when_primary_present() -> None:
    assert check_object("attributes", {"external_id": "u", "phone": "0123"}) == []
    assert [v.rule for v in check_object("attributes", {"email": "bad", "phone": "+33123456789"})] == [
        "email.invalid"
    ]


def test_ops_checked() -> None:
    assert (
        check_object(
            "attributes", {"external_id": "u", "n": {"inc": -2}, "t": {"add": ["a"], "remove": ["b"]}}
        )
        == []
    )
    assert [v.rule for v in check_object("attributes", {"external_id": "u", "t": {"add": ["x" * 300]}})] == [
        "string.too_long"
    ]
    assert [v.rule for v in check_object("attributes", {"external_id": "u", "n": {"inc": "3"}})] == [
        "standard_field.inc"
    ]


def test_recipient_attributes_checked_without_identifier() -> None:
    obj = {"external_user_id": "u", "attributes": {"gender": "X"}}
    assert [v.rule for v in check_object("canvas_trigger", obj)] == ["standard_field.gender"]


def test_alias_with_send_to_existing_only_false_is_rejected_with_braze_wording() -> None:
    obj = {"user_alias": ALIAS, "send_to_existing_only": False, "attributes": {"plan": "x"}}
    (v,) = check_object("canvas_trigger", obj)
    assert v.rule == "canvas.alias_send_to_existing_only" and v.field == "send_to_existing_only"
    assert "'send_to_existing_only' cannot be used with user aliases" in v.reason


def test_column_prechecks_leave_bad_dates_and_long_emails_to_check_object() -> None:
    """columns.py must flag every row check_object rejects (the fast mapping path relies on it)."""
    from connector.contract import columns

    dobs = ["1980-12-31", "2023-02-30", None, "2024-02-29", "2023-02-29", "1980-12-31\n"]
    assert columns.attribute_rows("dob", dobs, False) == {1, 4, 5}
    assert check_object("attributes", {"external_id": "u", "dob": "2024-02-29"}) == []
    emails = ["a@b.co", "a" * 250 + "@b.com", None]
    assert columns.identifier_rows({"external_id": [["u1", "u2", "u3"]], "email": [emails]}, 3) == {1}
    assert columns.identifier_rows({"email": [emails]}, 3) == {1, 2}
    assert columns.attribute_rows("push_tokens", [None, [{"app_id": "a", "token": "t"}]], False) == {1}


@pytest.mark.parametrize(
    ("kind", "field", "bad", "good"),
    [
        ("attributes", "external_id", {"external_id": "u\x001", "a": 1}, {"external_id": "u1", "a": 1}),
        ("attributes", "user_alias", {"user_alias": {"alias_name": "n", "alias_label": "crm\n"}}, {"user_alias": ALIAS}),
        ("attributes", "braze_id", {"braze_id": "b\x7f"}, {"braze_id": "b"}),
        ("attributes", "email", {"email": "a\t@b.co"}, {"email": "a@b.co"}),
        ("events", "external_id", _with(EV, external_id="u\x1b[31m"), EV),
        ("purchases", "external_id", _with(PU, external_id="\x85u"), PU),
        ("canvas_trigger", "external_user_id", {"external_user_id": "u\x00"}, {"external_user_id": "u"}),
    ],
)
def test_control_characters_in_identifiers_are_rejected(
    kind: str, field: str, bad: dict[str, Any], good: dict[str, Any]
) -> None:
    found = [v for v in check_object(kind, bad) if v.rule == "identifier.control_character"]  # type: ignore[arg-type]
    assert len(found) == 1 and found[0].field == field, found
    assert "control character U+" in found[0].reason
    assert check_object(kind, good) == []  # type: ignore[arg-type]


def test_control_characters_elsewhere_are_left_alone() -> None:
    assert check_object("attributes", {"external_id": "u", "bio": "line 1\nline 2", "x": "é ü 中"}) == []


def test_the_column_precheck_flags_control_characters_in_identifiers() -> None:
    from connector.contract import columns

    ids = ["u1", "u\x002", None, "u3\r", "u4"]
    assert columns.identifier_rows({"external_id": [ids]}, 5) == {1, 2, 3}  # None: identifier.missing
    aliases = [ALIAS, {"alias_name": "n\x00", "alias_label": "l"}]
    assert columns.identifier_rows({"user_alias": [aliases]}, 2) == {1}
