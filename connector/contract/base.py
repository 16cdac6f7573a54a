"""Shared constants, the Violation type and key checks of the contract rules."""

from __future__ import annotations

import re
from dataclasses import dataclass
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

_ISO_MS_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")  # the mapper's own output: checked first
_TIME_RE = re.compile(
    r"^(?:\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.:]\d{1,9})?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)?)?"
    r"|\d{2}/\d{2}/\d{4})$"
)
_DATE_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
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
_OPS = frozenset(("inc", "add", "remove", "$add", "$remove", "$update"))


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: its id, a human reason and the Braze field (dotted path) it concerns."""

    rule: str
    reason: str
    field: str | None = None


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
