"""HTTP routes for rules: CRUD, enable/disable, versions, dry run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from services.api.config.publisher import build_snapshot
from services.api.config.service import lock_configuration, record_changes
from services.api.deps import Editor, Principal, PublisherDep, SessionDep, Viewer
from services.api.redaction import hides_secrets, redact, redact_action, redact_rule
from services.api.rules import service
from services.api.rules.dry_run import RuleTestIn, RuleTestOut, run_test
from services.api.rules.models import RuleRow, RuleVersionRow
from shared.definitions import Rule
from shared.http import ApiError

router = APIRouter(prefix="/v1/rules", tags=["rules"])


class RuleIn(Rule):
    """A rule as marketing-ops write it (DESIGN §6): trigger, optional ``if``, wait,
    limits, quiet hours, holdout and goal, and the action. See docs/rules.md."""


class RuleOut(BaseModel):
    key: str
    version: int = Field(description="The current version; every content change adds one")
    enabled: bool
    created_at: datetime
    updated_at: datetime
    definition: Rule

    @classmethod
    def of(cls, row: RuleRow, who: Principal) -> RuleOut:
        rule = row.rule()
        return cls(
            key=row.key,
            version=row.version,
            enabled=row.enabled,
            created_at=row.created_at,
            updated_at=row.updated_at,
            definition=redact_rule(rule) if hides_secrets(who) else rule,
        )


class RuleVersionOut(BaseModel):
    key: str
    version: int
    actor: str = Field(description="The API key that saved this version")
    created_at: datetime
    definition: dict[str, Any] = Field(
        description="The rule as saved, without `enabled` (switching is not a new version)"
    )

    @classmethod
    def of(cls, row: RuleVersionRow, who: Principal) -> RuleVersionOut:
        return cls(
            key=row.rule_key,
            version=row.version,
            actor=row.actor,
            created_at=row.created_at,
            definition=redact(row.definition) if hides_secrets(who) else row.definition,
        )


def _not_found(key: str) -> ApiError:
    return ApiError(404, "not_found", f"no rule {key!r}")


@router.get("", response_model_exclude_none=True, summary="List rules")
async def list_rules(session: SessionDep, who: Viewer) -> list[RuleOut]:
    return [RuleOut.of(row, who) for row in await service.list_rules(session=session)]


@router.get("/{key}", response_model_exclude_none=True, summary="One rule")
async def get_rule(key: str, session: SessionDep, who: Viewer) -> RuleOut:
    row = await service.get_rule(session=session, key=key)
    if row is None:
        raise _not_found(key)
    return RuleOut.of(row, who)


@router.post(
    "",
    response_model_exclude_none=True,
    status_code=201,
    summary="Create a rule",
    description="Every CEL expression is compiled and every template parsed; a rule "
    "triggered by a stage needs that journey and stage to exist (422 otherwise).",
)
async def create_rule(
    rule: RuleIn, session: SessionDep, who: Editor, publisher: PublisherDep
) -> RuleOut:
    async with session.begin():
        await lock_configuration(session=session)
        if await service.get_rule(session=session, key=rule.key) is not None:
            raise ApiError(409, "conflict", f"rule {rule.key!r} exists; PUT replaces it")
        row, change = await service.save_rule(session=session, rule=rule, actor=who.name)
        await record_changes(session=session, actor=who.name, changes=[change])
    await publisher.publish()
    return RuleOut.of(row, who)


@router.put(
    "/{key}",
    response_model_exclude_none=True,
    summary="Create or replace a rule",
    description="201 when created, 200 when replaced or unchanged. A changed definition "
    "becomes a new version; the same definition again changes nothing.",
)
async def put_rule(
    key: str,
    rule: RuleIn,
    session: SessionDep,
    who: Editor,
    publisher: PublisherDep,
    response: Response,
) -> RuleOut:
    if rule.key != key:
        raise ApiError(422, "invalid", f"key: the body's key {rule.key!r} differs from {key!r}")
    async with session.begin():
        await lock_configuration(session=session)
        row, change = await service.save_rule(session=session, rule=rule, actor=who.name)
        version = await record_changes(session=session, actor=who.name, changes=[change])
    if version is not None:
        await publisher.publish()
    response.status_code = 201 if change is not None and change.action == "create" else 200
    return RuleOut.of(row, who)


@router.delete(
    "/{key}",
    response_model_exclude_none=True,
    status_code=204,
    summary="Delete a rule (its versions are kept)",
)
async def delete_rule(
    key: str, session: SessionDep, who: Editor, publisher: PublisherDep
) -> Response:
    async with session.begin():
        await lock_configuration(session=session)
        change = await service.delete_rule(session=session, key=key)
        if change is None:
            raise _not_found(key)
        await record_changes(session=session, actor=who.name, changes=[change])
    await publisher.publish()
    return Response(status_code=204)


async def _switch(
    key: str, enabled: bool, session: SessionDep, who: Editor, publisher: PublisherDep
) -> RuleOut:
    async with session.begin():
        await lock_configuration(session=session)
        row, change = await service.set_enabled(session=session, key=key, enabled=enabled)
        if row is None:
            raise _not_found(key)
        version = await record_changes(session=session, actor=who.name, changes=[change])
    if version is not None:
        await publisher.publish()
    return RuleOut.of(row, who)


@router.post(
    "/{key}/enable",
    response_model_exclude_none=True,
    summary="Switch a rule on (not a new version)",
)
async def enable_rule(
    key: str, session: SessionDep, who: Editor, publisher: PublisherDep
) -> RuleOut:
    return await _switch(key, True, session, who, publisher)


@router.post(
    "/{key}/disable",
    response_model_exclude_none=True,
    summary="Switch a rule off (not a new version)",
    description="A disabled rule is left out of the configuration the orchestrator runs.",
)
async def disable_rule(
    key: str, session: SessionDep, who: Editor, publisher: PublisherDep
) -> RuleOut:
    return await _switch(key, False, session, who, publisher)


@router.get("/{key}/versions", summary="Every version of a rule, oldest first")
async def list_versions(key: str, session: SessionDep, who: Viewer) -> list[RuleVersionOut]:
    rows = await service.list_versions(session=session, key=key)
    if not rows:
        raise _not_found(key)
    return [RuleVersionOut.of(row, who) for row in rows]


@router.post(
    "/{key}/test",
    summary="Dry run on a given event and profile: conditions, decisions, rendered message",
)
async def test_rule(key: str, body: RuleTestIn, session: SessionDep, who: Viewer) -> RuleTestOut:
    """Runs the stored rule (enabled or not) through the orchestrator's engine against the
    current journeys. Nothing is stored, scheduled or sent."""
    row = await service.get_rule(session=session, key=key)
    if row is None:
        raise _not_found(key)
    snapshot = await build_snapshot(session=session)
    result = run_test(row.rule(), row.version, snapshot, body)
    if result.action is not None and hides_secrets(who):
        result.action.rendered = redact_action(result.action.rendered)
    return result
