"""CEL expressions: compiled once, checked for unknown names, errors with positions."""

from __future__ import annotations

import re

import cel

# Names an expression may use (DESIGN §6). `trigger` only makes sense in `unless.match`
# and goals, but allowing it everywhere keeps the rule simple; it is null elsewhere.
VARIABLES = frozenset({"event", "customer", "trigger", "now"})
_ERROR_POSITION = re.compile(r"<input>:(\d+):(\d+):\s*(.*)")
_MACRO_BINDING = re.compile(r"\.(?:all|exists|exists_one|map|filter)\(\s*([A-Za-z_]\w*)\s*,")


class ExpressionError(ValueError):
    """An expression that does not compile: where it is and what is wrong."""

    retriable = False

    def __init__(self, field: str, source: str, line: int, column: int, reason: str) -> None:
        self.field = field
        self.source = source
        self.line = line
        self.column = column
        self.reason = reason
        super().__init__(f"{field}: {reason} at line {line}, column {column}")


def compile_expression(source: str, field: str) -> cel.Program:
    """Compile ``source`` or raise :class:`ExpressionError` naming ``field`` and the position."""
    try:
        program = cel.compile(source)
    except ValueError as exc:
        message = str(exc)
        match = _ERROR_POSITION.search(message)
        if match:
            raise ExpressionError(
                field, source, int(match[1]), int(match[2]), match[3].strip()
            ) from None
        raise ExpressionError(field, source, 1, 1, message.splitlines()[0]) from None
    bound = set(_MACRO_BINDING.findall(source))
    for name in program.variables():
        if name not in VARIABLES and name not in bound:
            found = re.search(rf"\b{re.escape(name)}\b", source)
            offset = found.start() if found else 0
            line = source.count("\n", 0, offset) + 1
            column = offset - (source.rfind("\n", 0, offset) + 1) + 1
            raise ExpressionError(
                field,
                source,
                line,
                column,
                f"unknown name {name!r}; use one of {', '.join(sorted(VARIABLES))}",
            )
    return program
