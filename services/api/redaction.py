"""What viewers do not see: an action's signing secret and its header values (they carry
the receivers' credentials). Editors, who set them, see them whole, so that an export they
apply again changes nothing."""

from __future__ import annotations

from typing import Any

from services.api.deps import Principal
from shared.definitions import Rule

REDACTED = "[redacted]"


def hides_secrets(who: Principal) -> bool:
    return who.role == "viewer"


def redact(value: Any) -> Any:
    """A copy of JSON-like data (a rule, a bundle, an audit entry) in which every action's
    secret and header values read ``[redacted]``."""
    if isinstance(value, list):
        return [redact(item) for item in value]
    if not isinstance(value, dict):
        return value
    copy = {key: redact(item) for key, item in value.items()}
    action = copy.get("action")
    if isinstance(action, dict):
        copy["action"] = redact_action(action)
    return copy


def redact_action(action: dict[str, Any]) -> dict[str, Any]:
    copy = dict(action)
    if copy.get("secret"):
        copy["secret"] = REDACTED
    if isinstance(copy.get("headers"), dict):
        copy["headers"] = dict.fromkeys(copy["headers"], REDACTED)
    return copy


def redact_rule(rule: Rule) -> Rule:
    action = rule.action
    hidden = redact_action({"secret": action.secret, "headers": action.headers})
    return rule.model_copy(update={"action": action.model_copy(update=hidden)})
