"""Journey funnels, observed paths and rule statistics, computed in PostgreSQL.

Keyword-only functions that receive the session. Every query reads the recorded history
within ``[since, until)`` by the time the history gives (a transition's ``at`` is the time
of the event that caused it). docs/analytics.md defines each number.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.api.analytics.models import (
    FunnelOut,
    FunnelStageOut,
    GroupOut,
    PathOut,
    PathsOut,
    RuleStatsOut,
    SequenceOut,
)

# "All time" without NULL-tolerant SQL: nothing Safar records is older.
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)

_WINDOW = "journey = :journey AND at >= :since AND at < :until"

_FURTHEST = text(f"""
    SELECT furthest, count(*) FROM (
        SELECT max(array_position(CAST(:stages AS text[]), to_stage)) AS furthest
        FROM history_transitions WHERE {_WINDOW}
        GROUP BY customer_id
    ) per_customer
    WHERE furthest IS NOT NULL
    GROUP BY furthest
""")

_NOW_IN = text(f"""
    SELECT to_stage, count(*) FROM (
        SELECT DISTINCT ON (customer_id) to_stage
        FROM history_transitions WHERE {_WINDOW}
        ORDER BY customer_id, at DESC, seq DESC
    ) last_move
    GROUP BY to_stage
""")

# Time from entering the stage a customer came from to entering this one: the gap to
# their previous move (which may predate the range), for their first forward arrival.
_TIMES = text(f"""
    WITH cohort AS (
        SELECT DISTINCT customer_id FROM history_transitions WHERE {_WINDOW}
    ), ordered AS (
        SELECT t.customer_id, t.to_stage, t.move, t.at, t.seq,
               t.at - lag(t.at) OVER (PARTITION BY t.customer_id ORDER BY t.at, t.seq) AS gap
        FROM history_transitions t JOIN cohort USING (customer_id)
        WHERE t.journey = :journey AND t.at < :until
    ), arrivals AS (
        SELECT DISTINCT ON (customer_id, to_stage)
               to_stage, CAST(EXTRACT(EPOCH FROM gap) AS double precision) AS seconds
        FROM ordered
        WHERE at >= :since AND move IN ('forward', 'skip') AND gap IS NOT NULL
        ORDER BY customer_id, to_stage, at, seq
    )
    SELECT to_stage, count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds),
           percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds)
    FROM arrivals GROUP BY to_stage
""")

_PATHS = text(f"""
    SELECT from_stage, to_stage, move, count(*) AS transitions,
           count(DISTINCT customer_id) AS customers
    FROM history_transitions WHERE {_WINDOW}
    GROUP BY from_stage, to_stage, move
    ORDER BY transitions DESC, from_stage NULLS FIRST, to_stage, move
""")

_SEQUENCES = text(f"""
    SELECT stages, count(*) AS customers FROM (
        SELECT array_agg(to_stage ORDER BY at, seq) AS stages
        FROM history_transitions WHERE {_WINDOW}
        GROUP BY customer_id
    ) per_customer
    GROUP BY stages
    ORDER BY customers DESC, stages
    LIMIT :limit
""")

_RULE_WINDOW = "rule = :rule AND {at} >= :since AND {at} < :until"
_RULE_OUTCOMES = text(f"""
    SELECT outcome, count(*) FROM history_rule_outcomes
    WHERE {_RULE_WINDOW.format(at="at")} GROUP BY outcome
""")
_ACTION_STATUSES = text(f"""
    SELECT status, count(*) FROM history_actions
    WHERE {_RULE_WINDOW.format(at="created_at")} GROUP BY status
""")
_CONVERSIONS = text(f"""
    SELECT group_name, count(*) FROM history_conversions
    WHERE {_RULE_WINDOW.format(at="at")} GROUP BY group_name
""")


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


async def funnel(
    *,
    session: AsyncSession,
    journey: str,
    stages: Sequence[str],
    since: datetime | None,
    until: datetime,
) -> FunnelOut:
    """Per stage of ``stages`` (in journey order): reached, now in, conversion, times."""
    window = {"journey": journey, "since": since or _BEGINNING, "until": until}
    furthest = {
        int(position): int(count)
        for position, count in (
            await session.execute(_FURTHEST, window | {"stages": list(stages)})
        ).tuples()
    }
    now_in = {
        stage: int(count) for stage, count in (await session.execute(_NOW_IN, window)).tuples()
    }
    times = {
        stage: (int(count), median, p90)
        for stage, count, median, p90 in (await session.execute(_TIMES, window)).tuples()
    }
    rows: list[FunnelStageOut] = []
    previous: int | None = None
    for index, stage in enumerate(stages):
        # Reaching a later stage passes this one, also when the customer skipped it.
        reached = sum(n for position, n in furthest.items() if position > index)
        conversion = None if previous is None else _ratio(reached, previous)
        timed, median, p90 = times.get(stage, (0, None, None))
        rows.append(
            FunnelStageOut(
                stage=stage,
                reached=reached,
                now_in=now_in.get(stage, 0),
                conversion=conversion,
                drop_off=None if previous is None else previous - reached,
                drop_off_rate=None if conversion is None else 1 - conversion,
                timed=timed,
                median_seconds=median,
                p90_seconds=p90,
            )
        )
        previous = reached
    return FunnelOut(
        journey=journey,
        since=since,
        until=until,
        customers=sum(furthest.values()),
        stages=rows,
    )


async def paths(
    *,
    session: AsyncSession,
    journey: str,
    since: datetime | None,
    until: datetime,
    limit: int,
) -> PathsOut:
    """Every observed move with its count, and the ``limit`` most frequent whole paths."""
    window = {"journey": journey, "since": since or _BEGINNING, "until": until}
    moves = [
        PathOut(
            from_stage=from_stage,
            to_stage=to_stage,
            move=move,
            transitions=int(transitions),
            customers=int(customers),
        )
        for from_stage, to_stage, move, transitions, customers in (
            await session.execute(_PATHS, window)
        ).tuples()
    ]
    sequences = [
        SequenceOut(stages=list(stages), customers=int(customers))
        for stages, customers in (
            await session.execute(_SEQUENCES, window | {"limit": limit})
        ).tuples()
    ]
    return PathsOut(journey=journey, since=since, until=until, paths=moves, sequences=sequences)


async def rule_stats(
    *, session: AsyncSession, rule: str, since: datetime | None, until: datetime
) -> RuleStatsOut:
    """Decisions, deliveries and conversions of one rule, and its uplift over the holdout."""
    window = {"rule": rule, "since": since or _BEGINNING, "until": until}
    outcomes = {k: int(n) for k, n in (await session.execute(_RULE_OUTCOMES, window)).tuples()}
    statuses = {k: int(n) for k, n in (await session.execute(_ACTION_STATUSES, window)).tuples()}
    conversions = {k: int(n) for k, n in (await session.execute(_CONVERSIONS, window)).tuples()}
    # Intent to treat: the holdout is drawn when the rule decides, so the treated group is
    # every fired decision, delivered or not; comparing with deliveries only would bias it.
    treated = GroupOut(
        customers=outcomes.get("fired", 0),
        conversions=conversions.get("treated", 0),
        conversion_rate=_ratio(conversions.get("treated", 0), outcomes.get("fired", 0)),
    )
    holdout = GroupOut(
        customers=outcomes.get("held_out", 0),
        conversions=conversions.get("holdout", 0),
        conversion_rate=_ratio(conversions.get("holdout", 0), outcomes.get("held_out", 0)),
    )
    uplift = (
        None
        if treated.conversion_rate is None or holdout.conversion_rate is None
        else treated.conversion_rate - holdout.conversion_rate
    )
    return RuleStatsOut(
        rule=rule,
        since=since,
        until=until,
        triggered=outcomes.get("triggered", 0),
        scheduled=outcomes.get("scheduled", 0),
        cancelled=outcomes.get("cancelled", 0),
        suppressed=outcomes.get("suppressed", 0),
        held_out=outcomes.get("held_out", 0),
        fired=outcomes.get("fired", 0),
        errors=outcomes.get("error", 0),
        sent=statuses.get("sent", 0),
        failed=statuses.get("failed", 0),
        retrying=statuses.get("retrying", 0),
        treated=treated,
        holdout=holdout,
        uplift=uplift,
        relative_uplift=(
            None
            if uplift is None or not holdout.conversion_rate
            else uplift / holdout.conversion_rate
        ),
    )
