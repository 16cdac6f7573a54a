"""Braze's own object rules (identifiers, lengths, time formats, currencies, sizes) as cheap checks.

`check_object(kind, obj)` returns the rules an object breaks (empty list = Braze should accept it).
Rule ids (docs/ARCHITECTURE.md "Rule ids"), plus the more specific ones added here:

| rule | meaning |
|---|---|
| identifier.missing / identifier.multiple | no identifier (always when the configured identifier cell is empty: mapping/objects.py) / more than one primary (Canvas: more than one of any) |
| external_id.too_long | external_id over 987 bytes UTF-8 |
| identifier.control_character | a control character (U+0000-U+001F, U+007F-U+009F, e.g. NUL) in an identifier: external_id, user_alias, braze_id, email, phone, external_user_id (added) |
| string.too_long | a string value (attribute, array item, property, name, product_id, nested) over 255 characters |
| key.invalid / key.reserved | key empty, over 255, leading `$` / a reserved event or purchase property key |
| event.name_missing, time.missing, time.invalid | event name; time absent, not a Braze format or no real date/time |
| purchase.product_id_missing, purchase.currency, purchase.price, purchase.quantity | purchase fields |
| properties.too_large, properties.too_many | over 100 KB (events) / 50 KB (purchases); over 256 keys |
| email.invalid, phone.invalid | email malformed or over 255 (also in recipient attributes); phone not E.164 where it identifies the user |
| standard_field.<name> | gender, dob (a real date), email_subscribe, push_subscribe, country, current_location, push_tokens, subscription_groups (ids are UUIDs) |
| nested.invalid | a nested custom attribute Braze would drop with every other nested update of the request (nested.py): a null inside, a key with a space, `.` or a leading `$`, a string over 255, over 100 KB, a malformed `$add`/`$remove`/`$update`; also event property keys of that kind |
| nested.time | a nested `{"$time": ...}` that is null, not a Braze time, or after year 3000 (same effect) |
| array.too_long | an array set as a whole with over 500 distinct values or over 100 KB (/users/track trims it, /users/track/sync answers 201 and leaves it unchanged) |
| canvas.context_too_large | Canvas context (or canvas_entry_properties, trigger_properties) over 50 KB |
| canvas.prioritization_missing | an email recipient without prioritization (added) |
| canvas.prioritization_invalid | prioritization not a list of identified, unidentified, most_recently_updated, least_recently_updated, or with both identified and unidentified (added) |
| canvas.attributes_missing | send_to_existing_only false without an attributes object (added) |
| canvas.alias_send_to_existing_only | a user_alias recipient with send_to_existing_only, which Braze refuses (400 for the whole call) (added) |
| canvas.subscription_groups | subscription_groups among a recipient's attributes (Braze does not apply them that way) |
| live_activity.missing_field | app_id, activity_id or content_state missing |
| live_activity.notification | notification not an object, over 1,912 bytes, or with an `extra` that is not an object or holds `ab`/`aps` |
"""

from __future__ import annotations

from connector.contract.base import CURRENCIES, Violation
from connector.contract.objects import check_object

__all__ = ["CURRENCIES", "Violation", "check_object"]
