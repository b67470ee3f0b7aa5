"""The example bundles apply cleanly, compile for the orchestrator and cover DESIGN §1."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.engine.compiled import CompiledConfig
from tests.config.conftest import Api

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    ("name", "stages", "rules"),
    [
        (
            "online-shop",
            {
                "purchase": [
                    "awareness",
                    "consideration",
                    "decision",
                    "purchase",
                    "retention",
                    "loyalty",
                ]
            },
            {"thank-you", "abandoned-cart", "loyalty-offer", "delivery-follow-up"},
        ),
        (
            "clothing-store",
            {
                "fashion": [
                    "awareness",
                    "comparison",
                    "decision",
                    "purchase",
                    "returns",
                    "regular",
                ]
            },
            {"return-label", "exchange-offer", "regular-customer-perk"},
        ),
        (
            "bank",
            {
                "banking": [
                    "awareness",
                    "comparison",
                    "account",
                    "transacting",
                    "regular",
                    "advocate",
                ],
                "account-opening": ["started", "documents", "verified", "rejected", "opened"],
            },
            {"application-reminder", "welcome", "savings-offer", "referral-invite"},
        ),
    ],
)
async def test_an_example_applies_and_compiles(
    api: Api, name: str, stages: dict[str, list[str]], rules: set[str]
) -> None:
    body = (EXAMPLES / f"{name}.yaml").read_bytes()
    result = await api.ok("POST", "/v1/config/apply", content=body)
    assert result["config_version"] is not None
    snapshot = (await api.snapshots())[-1]
    assert snapshot.version == result["config_version"]
    assert {j.key: [s.key for s in j.stages] for j in snapshot.bundle.journeys} == stages
    assert rules <= {r.key for r in snapshot.bundle.rules}
    compiled = CompiledConfig.compile(snapshot)
    assert [j.key for j in compiled.journeys] == list(stages)

    again = await api.ok("POST", "/v1/config/apply", content=body)
    assert again["changes"] == []
    assert again["unchanged"] == len(stages) + len(snapshot.bundle.rules)
