"""Checks beyond shape: every expression compiles and every template parses. Shared so
invalid definitions are refused by the api and could never be compiled differently by the
orchestrator.

Field names in errors are paths into the definition as written: ``if``,
``wait.unless.match``, ``action.payload.items[0].sku``; inside a bundle they start with
``journeys[0].`` or ``rules[2].``.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

from jinja2 import TemplateSyntaxError

from shared.definitions import CHANNEL_FIELDS, Bundle, Journey, Rule
from shared.expressions import compile_expression
from shared.templates import Sandbox
from shared.webhook_secret import check_secret

# Parsing needs no globals; one environment serves every check and is never rendered with.
_TEMPLATES = Sandbox(autoescape=False)


class TemplateError(ValueError):
    """A Jinja2 template that does not parse: which field, which line, what is wrong."""

    retriable = False

    def __init__(self, field: str, source: str, line: int, reason: str) -> None:
        self.field = field
        self.source = source
        self.line = line
        self.reason = reason
        super().__init__(f"{field}: {reason} at line {line}")


class DefinitionError(ValueError):
    """A field that parses but may not be saved, say a webhook secret too short to be safe.
    (Checked when saving only: configurations saved before the check still load.)"""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def templated_host(url: str) -> bool:
    """Whether a webhook url template may render to a host it does not spell out: any
    ``{`` before the path (``{{``, ``{%`` and ``{#`` alike; a host never holds one)."""
    scheme, found, rest = url.strip().partition("://")
    if not found or "{" in scheme:
        return True
    return "{" in re.split(r"[/?#]", rest, maxsplit=1)[0]


def check_template(source: str, field: str) -> None:
    """Parse and compile ``source`` in the sandbox or raise :class:`TemplateError`."""
    try:
        _TEMPLATES.from_string(source)
    except TemplateSyntaxError as exc:
        reason = (exc.message or str(exc)).rstrip(".")
        raise TemplateError(field, source, exc.lineno or 1, reason) from None
    except RecursionError:
        raise TemplateError(field, source, 1, "the template nests too deeply") from None


def _check_payload(value: Any, field: str) -> None:
    if isinstance(value, str):
        check_template(value, field)
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_payload(item, f"{field}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_payload(item, f"{field}[{index}]")


def check_journey(journey: Journey, where: str = "") -> None:
    """Raise ExpressionError for the first stage condition that does not compile."""
    for index, stage in enumerate(journey.stages):
        compile_expression(stage.when, f"{where}stages[{index}].when")


def check_rule(rule: Rule, where: str = "", *, policy: bool = True) -> None:
    """Raise ExpressionError, TemplateError or DefinitionError for the first part of
    ``rule`` that fails. ``policy``: also the checks added since rules were first saved
    (the secret's length, headers to a templated host), for a rule being saved now."""
    if policy:
        _check_policy(rule, where)
    _check_expressions_and_templates(rule, where)


def _check_policy(rule: Rule, where: str) -> None:
    action = rule.action
    if action.secret is not None:
        try:
            check_secret(action.secret)
        except ValueError as exc:
            raise DefinitionError(f"{where}action.secret", str(exc)) from None
    if action.url and action.headers and templated_host(action.url):
        raise DefinitionError(
            f"{where}action.headers",
            "a webhook whose host comes from a template cannot have headers: they would go "
            "to whatever host a trait or event names; template only the path",
        )


def _check_expressions_and_templates(rule: Rule, where: str) -> None:
    if rule.if_ is not None:
        compile_expression(rule.if_, f"{where}if")
    if rule.wait is not None:
        if rule.wait.key is not None:
            compile_expression(rule.wait.key, f"{where}wait.key")
        if rule.wait.unless is not None and rule.wait.unless.match is not None:
            compile_expression(rule.wait.unless.match, f"{where}wait.unless.match")
    if rule.goal is not None and rule.goal.match is not None:
        compile_expression(rule.goal.match, f"{where}goal.match")
    action = rule.action
    for name in CHANNEL_FIELDS[action.channel]:
        value = getattr(action, name)
        if name == "secret" or value is None:
            continue  # a credential, never rendered
        if name == "headers":
            for header, text in value.items():
                check_template(text, f"{where}action.headers.{header}")
        elif name == "payload":
            _check_payload(value, f"{where}action.payload")
        else:
            check_template(value, f"{where}action.{name}")


def check_bundle(bundle: Bundle) -> None:
    """Check every journey and rule of a bundle but the policy checks (see
    :func:`check_bundle_policy`); its shape and references are checked by the model."""
    for index, journey in enumerate(bundle.journeys):
        check_journey(journey, f"journeys[{index}].")
    for index, rule in enumerate(bundle.rules):
        check_rule(rule, f"rules[{index}].", policy=False)


def check_bundle_policy(bundle: Bundle, keys: Container[str]) -> None:
    """The policy checks of the bundle's rules named in ``keys``: those being saved now (a
    rule left as it is still applies, saved before a check was added)."""
    for index, rule in enumerate(bundle.rules):
        if rule.key in keys:
            _check_policy(rule, f"rules[{index}].")
