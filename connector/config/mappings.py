"""How a row's cells become the values of a Braze object: Values, identifiers and the object mappings.

Part of the pipeline file's pydantic models (extra keys forbidden, frozen); models.py holds the rest.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

ValueType = Literal["auto", "string", "integer", "float", "boolean", "time", "date", "array", "object"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- values


class Value(_Model):
    """Where one value comes from: a source column or a constant (exactly one), and how to convert it.

    Conversions: `type` casts the cell (`time` parses a date-time and sends ISO 8601 with an offset;
    `date` sends YYYY-MM-DD; `array` splits a string on `split`; `object` parses a JSON string into a nested
    object). `format` is a strptime format for time/date columns, or a list of them tried in order (a cell
    matching none is rejected); without it a time column takes ISO 8601 and Braze's documented formats,
    reading `07/09/2023` as the column's other values show (month/day when none does, with a warning);
    `timezone` is the IANA zone for times
    that carry no offset (default UTC). `on_empty` says what an empty cell does: `skip` leaves the Braze
    value untouched (the key is not sent), `null` sends null (which removes the attribute at Braze),
    `reject` rejects the row.
    """

    column: str | None = None
    value: Any = None
    type: ValueType = "auto"
    format: str | Annotated[list[str], Field(min_length=1)] | None = None
    timezone: str | None = None
    split: str | None = None
    on_empty: Literal["skip", "null", "reject"] = "skip"

    @model_validator(mode="after")
    def _one_source(self) -> Value:
        if (self.column is None) == (self.value is None):
            raise ValueError("give exactly one of 'column' (a source column) or 'value' (a constant)")
        if self.split is not None and self.type not in ("array", "auto"):
            raise ValueError("'split' only applies to type 'array'")
        return self


def _bare_column(v: Any) -> Any:
    """A bare string where a Value is expected names a column: `email: email_col`."""
    return {"column": v} if isinstance(v, str) else v


ColumnValue = Annotated[Value, BeforeValidator(_bare_column)]


class AttributeField(Value):
    """One attribute written to the profile.

    `to` is the Braze attribute name (standard field such as `first_name`, or a custom attribute); it
    defaults to the column name. `op`: `set` (default), `inc` (increment by the cell's number), `add` /
    `remove` (array add or remove; the cell is split on `split`, default ','), `merge` (nested object merged
    with `_merge_objects: true`).
    """

    to: str | None = None
    op: Literal["set", "inc", "add", "remove", "merge"] = "set"

    @property
    def target(self) -> str:
        name = self.to or self.column
        assert name is not None  # guaranteed by _target_named
        return name

    @model_validator(mode="after")
    def _target_named(self) -> AttributeField:
        if self.to is None and self.column is None:
            raise ValueError("a constant attribute needs 'to' (the Braze attribute name)")
        return self


class Properties(_Model):
    """Event, purchase, Canvas or Live Activity properties: listed columns and/or a JSON object column.

    `columns` maps property name -> Value (or a bare column name). Keys from `json_column` come first; listed
    columns override them.
    """

    columns: dict[str, ColumnValue] = Field(default_factory=dict)
    json_column: str | None = None


class UserAliasId(_Model):
    name: ColumnValue
    label: ColumnValue


class Identifier(_Model):
    """Exactly one identifier per object."""

    external_id: ColumnValue | None = None
    user_alias: UserAliasId | None = None
    braze_id: ColumnValue | None = None
    email: ColumnValue | None = None
    phone: ColumnValue | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Identifier:
        given = [k for k in ("external_id", "user_alias", "braze_id", "email", "phone") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of external_id, user_alias, braze_id, email, phone "
                f"(got {', '.join(given) or 'none'})"
            )
        return self

    @property
    def kind(self) -> str:
        for k in ("external_id", "user_alias", "braze_id", "email", "phone"):
            if getattr(self, k) is not None:
                return k
        raise AssertionError("unreachable")


class EventMapping(_Model):
    name: ColumnValue
    time: ColumnValue
    app_id: ColumnValue | None = None
    properties: Properties = Field(default_factory=Properties)


class PurchaseMapping(_Model):
    product_id: ColumnValue
    currency: ColumnValue
    price: ColumnValue
    time: ColumnValue
    quantity: ColumnValue | None = None
    app_id: ColumnValue | None = None
    properties: Properties = Field(default_factory=Properties)


Prioritization = Literal["identified", "unidentified", "most_recently_updated", "least_recently_updated"]


def _default_prioritization() -> list[Prioritization]:
    return ["identified", "most_recently_updated"]


CANVAS_PROPERTIES_BYTES = 50 * 1024  # "The context object has a maximum size limit of 50 KB"


class CanvasMapping(_Model):
    """One Canvas recipient per row; rows are packed up to 50 recipients per /canvas/trigger/send call.

    `properties`: each recipient's Canvas entry properties, from columns and/or a JSON column (the older
    spelling `context:` is still read). `shared_properties`: constants sent once per request at the top level,
    for every recipient (a recipient's own keys win, as Braze documents). `properties_key` is the name both go
    under: `canvas_entry_properties` (the default: what Braze's recorded traffic uses, read by every workspace)
    or `context` (the current docs' name, for workspaces in the Canvas Context early access).
    """

    canvas_id: str
    properties_key: Literal["canvas_entry_properties", "context"] = "canvas_entry_properties"
    properties: Properties = Field(
        default_factory=Properties, validation_alias=AliasChoices("properties", "context")
    )
    shared_properties: dict[str, Any] = Field(default_factory=dict)
    send_to_existing_only: bool = True
    attributes: list[AttributeField] = Field(default_factory=list)
    prioritization: list[Prioritization] = Field(default_factory=_default_prioritization)

    @model_validator(mode="after")
    def _prioritization_is_usable(self) -> CanvasMapping:
        if not self.prioritization:
            raise ValueError("prioritization must not be empty (Braze needs it for email recipients)")
        if {"identified", "unidentified"} <= set(self.prioritization):
            raise ValueError("prioritization cannot hold both 'identified' and 'unidentified' (Braze refuses it)")
        if any(a.target == "subscription_groups" for a in self.attributes):
            raise ValueError(
                "attributes: subscription_groups cannot be set through Canvas recipient attributes (Braze does "
                "not apply them this way); set them with an attributes stream"
            )
        size = len(orjson.dumps(self.shared_properties, default=str))
        if size > CANVAS_PROPERTIES_BYTES:
            raise ValueError(f"shared_properties is {size:,} bytes as JSON; Braze takes at most 50 KB")
        return self


class LiveActivityMapping(_Model):
    app_id: ColumnValue
    activity_id: ColumnValue
    content_state: Properties
    end_activity: ColumnValue | None = None
    dismissal_date: ColumnValue | None = None
    stale_date: ColumnValue | None = None
    notification_json_column: str | None = None
