"""Action templates: Jinja2 in a sandbox, rendered at send time (DESIGN §6, §7); the
dispatcher renders with it, and the api's rule dry run shows the same result.

Templates see ``customer`` (the profile at fire time), ``trigger`` (the event that fired the
rule, ``{}`` for none), ``rule`` (``key``, ``version``) and ``action`` (``id``, ``channel``,
``created_at``, ``attempt``). A missing key renders as an empty string, as in Jinja2 itself;
anything that does not render raises :class:`TemplateRenderError` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jinja2 import Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from shared.actions import ActionRecord

# `{{ trigger.properties.cart_id }}`: most payload fields are one variable, nothing else.
_ONE_VARIABLE = re.compile(r"\{\{ *([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*) *\}\}")
_MISSING = object()


# What one template may do: past these it is refused (SecurityError) instead of taking the
# process's CPU or memory, and so every delivery; operators are not folded when compiling.
_MAX_EXPONENT = 256
_MAX_REPEATED = 1 << 20  # items or characters of a repeated string or list, a filter's width
# Loop turns and function or macro calls of one render, all together: nested loops and
# recursive macros multiply, so a bound on each range or loop alone would not do.
_MAX_STEPS = 1_000_000
_steps_left: ContextVar[list[int] | None] = ContextVar("steps_left", default=None)
# Filters whose number arguments size what they build (`'x' | center(10 ** 9)`).
_SIZED_FILTERS = ("batch", "center", "indent", "slice", "truncate", "wordwrap")


def _step() -> None:
    left = _steps_left.get()
    if left is None:  # outside TemplateRenderer.render: no render to charge
        return
    left[0] -= 1
    if left[0] < 0:
        raise SecurityError(f"more than {_MAX_STEPS:,} loop turns and calls in one render")


def _sized(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and abs(value) > _MAX_REPEATED:
                raise SecurityError(f"{name} with {value}: sizes go up to {_MAX_REPEATED}")
        return original(*args, **kwargs)

    return bounded


class Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox, with ``**``, ``*``, sizing filters, loops and calls bounded."""

    intercepted_binops = frozenset(("**", "*"))

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        for name in _SIZED_FILTERS:
            self.filters[name] = _sized(name, self.filters[name])
        self.globals.pop("lipsum", None)

    def _generate(
        self,
        source: nodes.Template,
        name: str | None,
        filename: str | None,
        defer_init: bool = False,
    ) -> str:
        # Every loop iterates through `counted`, reached as an attribute of the environment
        # (a template cannot rebind it), so each turn is charged. (Jinja's hook between
        # parsing and code generation; its name is private to Jinja 3.1.)
        for loop in source.find_all(nodes.For):
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("counted"),
                [loop.iter],
                [],
                None,
                None,
                lineno=loop.lineno,
            )
        return super()._generate(source, name, filename, defer_init)

    @staticmethod
    def counted(iterable: Any) -> Iterator[Any]:
        for item in iterable:
            _step()
            yield item

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"an exponent above {_MAX_EXPONENT}")
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(times, int)
                    and len(sequence) * times > _MAX_REPEATED
                ):
                    raise SecurityError(f"a repetition of more than {_MAX_REPEATED} items")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=2048)
def _variable_path(source: str) -> tuple[str, ...] | None:
    """The names of a template that is exactly one ``{{ a.b.c }}``, else None."""
    match = _ONE_VARIABLE.fullmatch(source)
    return tuple(match.group(1).split(".")) if match else None


def _look_up(context: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """What Jinja finds for ``a.b.c`` when every step is a key of a dict (not a dict
    attribute such as ``items``, which Jinja would find first); else ``_MISSING``."""
    value: Any = context.get(path[0], _MISSING)
    for name in path[1:]:
        if type(value) is not dict or hasattr(dict, name):
            return _MISSING
        value = value.get(name, _MISSING)
    return value


class TemplateRenderError(ValueError):
    """A template that does not render; the message names the field. Never retriable."""

    retriable = False


def template_context(action: ActionRecord) -> dict[str, Any]:
    """What an action's templates may use."""
    return {
        "customer": action.customer,
        "trigger": action.trigger or {},
        "rule": {"key": action.rule, "version": action.rule_version},
        "action": {
            "id": action.action_id,
            "channel": action.channel,
            "created_at": action.created_at,
            "attempt": action.attempt + 1,
        },
    }


class TemplateRenderer:
    """Renders template strings in a sandbox; each source is compiled once (LRU cache)."""

    def __init__(self, cache_size: int = 2048) -> None:
        text = Sandbox(autoescape=False, keep_trailing_newline=True)
        # HTML bodies escape what they interpolate: a customer's name is not markup.
        html = Sandbox(autoescape=True, keep_trailing_newline=True)
        self._compile_text: Callable[[str], Template] = lru_cache(maxsize=cache_size)(
            text.from_string
        )
        self._compile_html: Callable[[str], Template] = lru_cache(maxsize=cache_size)(
            html.from_string
        )

    def render(
        self, source: str, context: Mapping[str, Any], *, field: str, html: bool = False
    ) -> str:
        """Render one template; ``field`` names it in the error (``subject``, ``payload.x``)."""
        if "{" not in source:  # no tag, expression or comment: renders to itself
            return source
        if not html and (path := _variable_path(source)) is not None:
            # Jinja's own answer, without a render context: str() of the value. Anything
            # else (a missing key, an attribute) takes the full path and its errors.
            value = _look_up(context, path)
            if value is not _MISSING:
                return str(value)
        budget = _steps_left.set([_MAX_STEPS])
        try:
            template = (self._compile_html if html else self._compile_text)(source)
            return template.render(context)
        except TemplateSyntaxError as exc:
            raise TemplateRenderError(
                f"template error in {field}, line {exc.lineno}: {exc.message}"
            ) from exc
        except SecurityError as exc:
            raise TemplateRenderError(
                f"template in {field} does something templates may not do: {exc}"
            ) from exc
        except TemplateError as exc:
            raise TemplateRenderError(f"template error in {field}: {exc}") from exc
        except RecursionError as exc:  # a macro that calls itself without end
            raise TemplateRenderError(f"template in {field} recurses too deeply") from exc
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
            # Raised by filters and operators on the customer's data, e.g. `{{ 1 / 0 }}`.
            raise TemplateRenderError(
                f"template error in {field}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            _steps_left.reset(budget)

    def render_tree(self, value: Any, context: Mapping[str, Any], *, field: str) -> Any:
        """Render every string inside a JSON value (a webhook or kafka payload)."""
        if isinstance(value, str):
            return self.render(value, context, field=field)
        if isinstance(value, dict):
            return {
                key: self.render_tree(item, context, field=f"{field}.{key}")
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [
                self.render_tree(item, context, field=f"{field}[{index}]")
                for index, item in enumerate(value)
            ]
        return value
