"""Shared constants, the Violation type and key checks of the contract rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

MAX_STRING = 255
MAX_EXTERNAL_ID_BYTES = 987
MAX_PROPERTIES = 256
KB = 1024

# ISO 4217 active alphabetic codes.
CURRENCIES: frozenset[str] = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BZD
    CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL
    GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD
    KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK
    NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP
    STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED VES VND VUV WST XAF
    XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XTS XUA XXX YER ZAR ZMW ZWG ZWL""".split()
)

# The mapper's own output, checked first and for its shape only: the mapper writes it from a real datetime,
# and columns.py takes it as valid without parsing (a 2023-02-30T00:00:00.000Z from elsewhere passes).
_ISO_MS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# Braze's other time formats (ISO 8601 variants, `yyyy-MM-ddTHH:mm:ss:SSSZ`, `MM/dd/yyyy`), with their parts
# captured so _valid_time can check they name a real instant. One space may precede the zone, not after a
# fraction of a second (the forms Braze's parser takes).
_TIME_RE = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)"
    r"(?:[T ](\d\d):(\d\d)(?::(\d\d)(\.\d{1,9}|:\d{3})?)?( ?)(?:Z|([+-])(\d\d)(?::?(\d\d))?)?)?"
    r"|(\d\d)/(\d\d)/(\d{4})",
    re.ASCII,
)
_DATE_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")  # the shape only: see _valid_date
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_PHONE_RE = re.compile(r"^\+[1-9]\d{1,14}$")
_COUNTRY_RE = re.compile(r"^[A-Za-z]{2}$")
_PRIMARY = ("external_id", "user_alias", "braze_id")
_CONTROL = frozenset(
    ("external_id", "user_alias", "braze_id", "_update_existing_only", "push_token_import", "_merge_objects")
)
_RESERVED = {
    "events": frozenset(("time", "event_name")),
    "purchases": frozenset(("time", "product_id", "quantity", "event_name", "price", "currency")),
}
_PROPS_LIMIT = {"events": 100 * KB, "purchases": 50 * KB}
_SUBSCRIBE = frozenset(("opted_in", "subscribed", "unsubscribed"))
_GENDERS = frozenset(("M", "F", "O", "N", "P"))
# Canvas recipient prioritization values (braze-api.md §6); `identified` and `unidentified` exclude each other.
_PRIORITIZATION = frozenset(("identified", "unidentified", "most_recently_updated", "least_recently_updated"))
_SUBSCRIPTION_GROUP_STATES = frozenset(("subscribed", "unsubscribed"))
# Braze's standard profile fields (braze-api.md §3.2): never custom (or nested custom) attributes.
_STANDARD_NAMES = frozenset(
    """first_name last_name home_city email phone country language dob gender time_zone email_subscribe
    push_subscribe email_open_tracking_disabled email_click_tracking_disabled date_of_first_session
    date_of_last_session marked_email_as_spam_at current_location push_tokens subscription_groups facebook
    twitter""".split()
)


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: its id, a human reason and the Braze field (dotted path) it concerns."""

    rule: str
    reason: str
    field: str | None = None


def _valid_date(v: str) -> bool:
    """A real calendar date written YYYY-MM-DD (ASCII digits, nothing around it): what Braze takes as dob."""
    if len(v) != 10 or not v.isascii() or not _DATE_RE.match(v):
        return False
    try:
        date.fromisoformat(v)
    except ValueError:
        return False
    return True


def _valid_time(v: str) -> bool:
    """One of Braze's time formats naming a real date and time (no 2023-02-30, 25:00 or +01:60)."""
    return _parse_time(v) is not None


def _parse_time(v: str) -> datetime | None:
    """The UTC instant a Braze time string names, or None when it is not one (see _valid_time)."""
    m = _TIME_RE.fullmatch(v)
    if m is None:
        return None
    y, mo, d, h, mi, sec, frac, space, sign, oh, om, us_mo, us_d, us_y = m.groups()
    if us_y is not None:
        y, mo, d = us_y, us_mo, us_d
    if space and (frac or (sign is None and not v.endswith("Z"))):
        return None  # a space before the zone only: not after a fraction, not trailing
    try:
        tz = UTC
        if sign is not None:
            offset = timedelta(hours=int(oh), minutes=int(om or 0))
            if int(om or 0) > 59:
                return None
            tz = timezone(-offset if sign == "-" else offset)
        return datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0), tzinfo=tz).astimezone(
            UTC
        )
    except (ValueError, OverflowError):  # no such date or time, or an instant outside years 1-9999
        return None


def _valid_email(v: object) -> bool:
    """An email address Braze accepts: the address shape, at most 255 characters."""
    return isinstance(v, str) and len(v) <= MAX_STRING and bool(_EMAIL_RE.match(v))


def _short(s: str) -> str:
    return s if len(s) <= 40 else s[:40] + "..."


def _key(k: Any, field: str, out: list[Violation]) -> bool:
    if not isinstance(k, str) or not k or len(k) > MAX_STRING or k[0] == "$":
        what = (
            "empty" if not k else ("over 255 characters" if len(str(k)) > MAX_STRING else "starting with '$'")
        )
        out.append(Violation("key.invalid", f"key {_short(str(k))!r} is {what}", field))
        return False
    return True
