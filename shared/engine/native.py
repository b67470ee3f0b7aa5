"""A native fast path for the simplest CEL expressions, the ones most conditions are.

Handing an event to CEL costs about a microsecond per value (more than evaluating the
program), so ``event.name in ["Product Viewed", "Products Searched"]``,
``count("Order Completed") >= 2`` or ``double(event.properties.price) >= 20.0`` are
evaluated here in Python and the CEL context is never built for them. The subset:

- literals: ``true``, ``false``, ``null``, decimal ints and doubles, quoted strings
  without escapes;
- ``event.name``, ``event.type`` (a string or null), ``count("...")``,
  ``days_since("...")``;
- a field of a map: ``event.properties.x``, ``event.traits.x``, ``trigger.properties.x``,
  ``customer.traits.x``; ``has(...)`` of one; ``double(...)`` of one or of a number;
- ``==`` and ``!=`` (never between a bool and a non-bool), ``<``, ``<=``, ``>``, ``>=``
  between numbers, ``x in [literals]``;
- ``&&``, ``||``, ``!`` and parentheses over booleans.

Anything else returns ``None`` from :func:`compile_native`, and the expression runs in
CEL. A field's value is known only at run time: when it is missing or is not a string,
number, bool or null (or ``double()`` would have to parse a string), the native function
raises :class:`NativeFallback` and that one evaluation runs in CEL, which gives the value
or the error. Results equal CEL's, which a property test checks on generated expressions.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from shared.engine.expression_context import Scope

Native = Callable[["Scope"], Any]
# "field": a map field's value, of a type known only at run time.
Kind = Literal["bool", "number", "string", "null", "string?", "field"]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+\.\d+|\d+(?![\w.]))
    | (?P<string>"[^"\\\n]*"|'[^'\\\n]*')
    | (?P<name>[A-Za-z_]\w*)
    | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.-])
    )""",
    re.VERBOSE,
)
_ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_PROFILE_FUNCTIONS = ("count", "days_since")
_EVENT_FIELDS = ("name", "type")
_SCALARS = (str, int, float, bool, type(None))
_INT64 = 2**63


def _event_properties(s: Scope) -> Any:
    return s.event["properties"]


def _event_traits(s: Scope) -> Any:
    return s.event["traits"]


def _trigger_properties(s: Scope) -> Any:
    return s.trigger["properties"]  # type: ignore[index]  # no trigger: TypeError, CEL decides


def _customer_traits(s: Scope) -> Any:
    return s.profile.traits


# The maps whose fields the subset reads: (variable, map) -> how a scope holds the map.
_MAPS: dict[tuple[str, str], Callable[[Scope], Any]] = {
    ("event", "properties"): _event_properties,
    ("event", "traits"): _event_traits,
    ("trigger", "properties"): _trigger_properties,
    ("customer", "traits"): _customer_traits,
}


class _Unsupported(Exception):
    """Outside the native subset: the expression runs in CEL."""


class NativeFallback(Exception):
    """A value the native path does not decide: this evaluation runs in CEL."""


@dataclass(frozen=True, slots=True)
class _Node:
    kind: Kind
    run: Native
    constant: bool = False  # a literal: its value is run(None)
    number_type: type | None = None  # int or float, for a "number"


def _literal(kind: Kind, value: Any) -> _Node:
    number_type = type(value) if kind == "number" else None
    return _Node(kind, lambda _scope: value, constant=True, number_type=number_type)


def _tokens(source: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    source = source.rstrip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.lastgroup is None:
            raise _Unsupported(source[position:])
        found.append((match.lastgroup, match[match.lastgroup]))
        position = match.end()
    return found


class _Parser:
    """Recursive descent in CEL's precedence: ``||`` < ``&&`` < relations < unary."""

    def __init__(self, source: str) -> None:
        self._tokens = _tokens(source)
        self._at = 0

    def parse(self) -> _Node:
        node = self._or()
        if self._at != len(self._tokens):
            raise _Unsupported("trailing input")
        return node

    def _peek(self) -> str | None:
        return self._tokens[self._at][1] if self._at < len(self._tokens) else None

    def _take(self, kind: str | None = None, text: str | None = None) -> str:
        if self._at == len(self._tokens):
            raise _Unsupported("unexpected end")
        found_kind, found = self._tokens[self._at]
        if (kind is not None and found_kind != kind) or (text is not None and found != text):
            raise _Unsupported(found)
        self._at += 1
        return found

    def _or(self) -> _Node:
        node = self._and()
        while self._peek() == "||":
            self._take()
            node = _either(_boolean(node), _boolean(self._and()))
        return node

    def _and(self) -> _Node:
        node = self._relation()
        while self._peek() == "&&":
            self._take()
            node = _both(_boolean(node), _boolean(self._relation()))
        return node

    def _relation(self) -> _Node:
        left = self._unary()
        op = self._peek()
        if op == "in":
            self._take()
            return _membership(left, self._list())
        if op in ("==", "!=", *_ORDERING):
            self._take()
            right = self._unary()
            if self._peek() in ("==", "!=", "in", *_ORDERING):
                raise _Unsupported("chained relation")  # a type error in CEL
            return _compare(op, left, right)
        return left

    def _unary(self) -> _Node:
        if self._peek() == "!":
            self._take()
            return _negation(_boolean(self._unary()))
        if self._peek() == "-":
            self._take()
            return _number(self._take("number"), negative=True)
        return self._primary()

    def _primary(self) -> _Node:
        kind, text = self._tokens[self._at] if self._at < len(self._tokens) else ("", "")
        if text == "(":
            self._take()
            node = self._or()
            self._take(text=")")
            return node
        self._take()
        if kind == "number":
            return _number(text)
        if kind == "string":
            return _literal("string", text[1:-1])
        if text in ("true", "false"):
            return _literal("bool", text == "true")
        if text == "null":
            return _literal("null", None)
        if text in ("event", "trigger", "customer"):
            self._take(text=".")
            field = self._take("name")
            if text == "event" and field in _EVENT_FIELDS:
                return _event_field(field)
            return self._map_field(text, field, test_only=False)
        if text in ("has", "double"):
            self._take(text="(")
            if text == "has":
                variable = self._take("name")
                self._take(text=".")
                node = self._map_field(variable, self._take("name"), test_only=True)
            else:
                node = _double(self._or())
            self._take(text=")")
            return node
        if text in _PROFILE_FUNCTIONS:
            self._take(text="(")
            argument = self._take("string")[1:-1]
            self._take(text=")")
            return _profile_function(text, argument)
        raise _Unsupported(text)

    def _map_field(self, variable: str, map_name: str, *, test_only: bool) -> _Node:
        """``variable.map_name.key``: its value, or with ``test_only`` whether it is set."""
        read = _MAPS.get((variable, map_name))
        if read is None:
            raise _Unsupported(f"{variable}.{map_name}")
        self._take(text=".")
        key = self._take("name")
        if self._peek() == ".":
            raise _Unsupported("nested field")
        return _has_field(read, key) if test_only else _field(read, key)

    def _list(self) -> tuple[Any, ...]:
        self._take(text="[")
        items: list[_Node] = []
        while self._peek() != "]":
            items.append(self._unary())
            if self._peek() != "]":
                self._take(text=",")
        self._take(text="]")
        if not all(item.constant and item.kind != "bool" for item in items):
            raise _Unsupported("list of non-literals")
        return tuple(item.run(None) for item in items)  # type: ignore[arg-type]


def _either(left: _Node, right: _Node) -> _Node:
    a, b = left.run, right.run
    return _Node("bool", lambda s: a(s) or b(s))


def _both(left: _Node, right: _Node) -> _Node:
    a, b = left.run, right.run
    return _Node("bool", lambda s: a(s) and b(s))


def _negation(inner: _Node) -> _Node:
    a = inner.run
    return _Node("bool", lambda s: not a(s))


def _event_field(field: str) -> _Node:
    return _Node("string?", lambda s: s.event[field])


def _field(read: Callable[[Scope], Any], key: str) -> _Node:
    def run(s: Scope) -> Any:
        try:
            value = read(s)[key]
        except (KeyError, TypeError):
            raise NativeFallback from None  # CEL's own error (no such key, no trigger, ...)
        if not isinstance(value, _SCALARS) or (type(value) is int and abs(value) >= _INT64):
            raise NativeFallback
        return value

    return _Node("field", run)


def _has_field(read: Callable[[Scope], Any], key: str) -> _Node:
    def run(s: Scope) -> bool:
        try:
            container = read(s)
        except (KeyError, TypeError):
            raise NativeFallback from None
        if type(container) is not dict:
            raise NativeFallback  # `in` would test a string or a list; CEL's has() errs
        return key in container

    return _Node("bool", run)


def _double(inner: _Node) -> _Node:
    if inner.kind not in ("number", "field"):
        raise _Unsupported("double() of a non-number")
    a = inner.run

    def run(s: Scope) -> float:
        value = a(s)
        if type(value) not in (int, float):
            raise NativeFallback  # a string to parse, or CEL's error
        return float(value)

    return _Node("number", run, number_type=float)


def _profile_function(name: str, argument: str) -> _Node:
    if name == "count":
        return _Node("number", lambda s: s.count(argument), number_type=int)
    return _Node("number", lambda s: s.days_since(argument), number_type=int)


def _number(text: str, negative: bool = False) -> _Node:
    value: int | float = float(text) if "." in text else int(text)
    return _literal("number", -value if negative else value)


def _boolean(node: _Node) -> _Node:
    if node.kind != "bool":
        raise _Unsupported("not a boolean")  # CEL: no such overload
    return node


def _as_doubles(x: Any, y: Any) -> tuple[Any, Any]:
    """CEL compares an int with a double as two doubles (2**53 + 1 == 2.0**53 holds)."""
    if type(x) is int and type(y) is float:
        return float(x), y
    if type(x) is float and type(y) is int:
        return x, float(y)
    return x, y


def _cel_equal(x: Any, y: Any) -> bool:
    """CEL's equality of two scalars: Python's, except that a bool equals only a bool and an
    int meets a double as a double."""
    if type(x) is bool or type(y) is bool:
        return type(x) is type(y) and x == y
    return bool(operator.eq(*_as_doubles(x, y)))


def _compare(op: str, left: _Node, right: _Node) -> _Node:
    a, b = left.run, right.run
    if op in ("==", "!="):
        # CEL's equality across types is false, as Python's is, except bool against numbers
        # and ints against doubles.
        numbers = left.kind == right.kind == "number"
        if "field" in (left.kind, right.kind) or (
            numbers and left.number_type is not right.number_type
        ):
            if op == "==":
                return _Node("bool", lambda s: _cel_equal(a(s), b(s)))
            return _Node("bool", lambda s: not _cel_equal(a(s), b(s)))
        if (left.kind == "bool") != (right.kind == "bool"):
            raise _Unsupported("bool compared with a non-bool")
        if op == "==":
            return _Node("bool", lambda s: a(s) == b(s))
        return _Node("bool", lambda s: a(s) != b(s))
    if left.kind != "number" or right.kind != "number":
        raise _Unsupported("ordering of non-numbers")
    compare = _ORDERING[op]
    if left.number_type is not right.number_type:
        return _Node("bool", lambda s: compare(*_as_doubles(a(s), b(s))))
    return _Node("bool", lambda s: compare(a(s), b(s)))


def _membership(left: _Node, items: tuple[Any, ...]) -> _Node:
    if left.kind == "bool":
        raise _Unsupported("bool in a list")
    run = left.run
    mixed = left.kind == "number" and any(
        type(i) in (int, float) and type(i) is not left.number_type for i in items
    )
    if left.kind == "field" or mixed:
        # Element by element, with CEL's equality (no bools in the list: see _list).
        def member(s: Scope) -> bool:
            value = run(s)
            if type(value) is bool:
                raise NativeFallback  # Python would find True in [1]; CEL does not
            return any(_cel_equal(value, item) for item in items)

        return _Node("bool", member)
    values = frozenset(items) if left.kind != "number" else items
    return _Node("bool", lambda s: run(s) in values)


def compile_native(source: str) -> Native | None:
    """A Python function equal to the CEL expression, or None when it is outside the subset."""
    try:
        return _Parser(source).parse().run
    except _Unsupported:
        return None
