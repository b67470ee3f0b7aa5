"""Bundles as marketing-ops send them: YAML or JSON text to a checked :class:`Bundle`.

Errors are client errors with positions: 400 for text that is not YAML/JSON (line and
column), 422 for a bundle of the wrong shape (the path of the field, e.g.
``rules[2].wait.for``).
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from shared.definitions import Bundle
from shared.http import ApiError


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors/aliases: a few lines of ``*a`` could expand to gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in a bundle", event.start_mark
            )
        return super().compose_node(parent, index)


def _path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def parse_bundle(raw: bytes, content_type: str) -> Bundle:
    """A bundle from JSON or YAML (YAML unless the content type says JSON)."""
    try:
        if "json" in content_type:
            data = orjson.loads(raw)
        else:
            # Through JSON: what YAML has beyond it (binary, sets, keys that are not text)
            # cannot be stored or published.
            data = orjson.loads(orjson.dumps(yaml.load(raw.decode(), Loader=_NoAliasLoader)))
    except orjson.JSONEncodeError as exc:
        raise ApiError(
            400, "bad_request", f"the bundle holds a value JSON has not: {exc}"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "bad_request", f"the bundle is not JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ApiError(400, "bad_request", "the bundle is not UTF-8 text") from None
    except RecursionError:
        raise ApiError(400, "bad_request", "the bundle is nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ApiError(400, "bad_request", f"the bundle is not YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "invalid", "a bundle is a mapping with `journeys` and `rules`")
    try:
        return Bundle.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = first["msg"].removeprefix("Value error, ")
        where = _path(tuple(first["loc"]))
        more = exc.error_count() - 1
        extra = f" (and {more} more)" if more else ""
        raise ApiError(
            422, "invalid", f"{where}: {reason}{extra}" if where else reason + extra
        ) from None
