"""The dispatcher's pure parts: signatures, retry policy, templates, offsets, targets."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from jinja2.sandbox import SandboxedEnvironment
from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook

from services.orchestrator.dispatcher.exceptions import DeliveryError, TargetRefusedError
from services.orchestrator.dispatcher.http_client import HttpClient
from services.orchestrator.dispatcher.offset_tracker import OffsetTracker
from services.orchestrator.dispatcher.private_targets import public_addresses
from services.orchestrator.dispatcher.retry_policy import (
    RetryPolicy,
    decide,
    is_retriable_status,
    parse_retry_after,
)
from services.orchestrator.dispatcher.signatures import sign, signature_headers
from services.orchestrator.dispatcher.webhook import WebhookChannel, without_credentials
from shared.actions import seal, unseal
from shared.definition_checks import TemplateError, check_template
from shared.templates import TemplateRenderer, TemplateRenderError, template_context
from shared.webhook_secret import decode_secret
from tests.delivery.conftest import SECRET, make_action

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- signatures ---------------------------------------------------------------------------


def test_signatures_verify_with_the_standardwebhooks_library() -> None:
    body = b'{"id":"act_1","payload":{"name":"\xc3\x85sa"}}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = signature_headers(decode_secret(SECRET), "act_1", timestamp, body)
    assert Webhook(SECRET).verify(body, headers) == {"id": "act_1", "payload": {"name": "Åsa"}}
    # The same bytes the library signs, for the same id and second.
    expected = Webhook(SECRET).sign("act_1", datetime.fromtimestamp(timestamp, UTC), body.decode())
    assert headers["webhook-signature"] == expected


def test_the_signature_covers_id_timestamp_and_body() -> None:
    key = decode_secret(SECRET)
    reference = sign(key, "act_1", 1700000000, b"{}")
    assert sign(key, "act_2", 1700000000, b"{}") != reference
    assert sign(key, "act_1", 1700000001, b"{}") != reference
    assert sign(key, "act_1", 1700000000, b"{ }") != reference
    assert reference.startswith("v1,")


def test_secrets_are_whsec_base64_and_the_prefix_is_optional() -> None:
    raw = b"\x01\x02secret-bytes"
    encoded = base64.b64encode(raw).decode()
    assert decode_secret("whsec_" + encoded) == raw
    assert decode_secret(encoded) == raw
    assert decode_secret("whsec_" + encoded.rstrip("=")) == raw
    for bad in ("whsec_not base64!", "whsec_", ""):
        with pytest.raises(ValueError, match=r"whsec_|empty"):
            decode_secret(bad)


# --- retry policy -------------------------------------------------------------------------


POLICY = RetryPolicy(schedule_s=(1.0, 10.0, 100.0), jitter=0.5, retry_after_max_s=60.0)


def test_the_schedule_is_a_lower_bound_stretched_by_jitter() -> None:
    assert POLICY.max_attempts == 4
    assert POLICY.delay_after(1, None, 0.0) == 1.0
    assert POLICY.delay_after(2, None, 0.999) == pytest.approx(14.995)
    assert POLICY.delay_after(3, None, 0.5) == 125.0
    assert POLICY.delay_after(4, None, 0.0) is None


def test_retry_after_wins_over_the_schedule_up_to_a_cap() -> None:
    assert POLICY.delay_after(1, 30.0, 0.9) == 30.0
    assert POLICY.delay_after(1, 3600.0, 0.9) == 60.0
    assert POLICY.delay_after(4, 5.0, 0.0) is None  # no retries left whatever it says


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(format_datetime(NOW + timedelta(seconds=90), usegmt=True), NOW) == 90
    assert parse_retry_after(format_datetime(NOW - timedelta(seconds=5), usegmt=True), NOW) == 0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("\u00b2", NOW) is None  # a digit to isdigit(), not to float()
    assert parse_retry_after(None, NOW) is None


@pytest.mark.parametrize(
    ("status", "retriable"),
    [
        (500, True),
        (502, True),
        (503, True),
        (429, True),
        (408, True),
        (410, False),
        (400, False),
        (401, False),
        (404, False),
        (422, False),
    ],
)
def test_which_statuses_are_retried(status: int, retriable: bool) -> None:
    assert is_retriable_status(status) is retriable


def test_decisions() -> None:
    assert decide(POLICY, 1, None, 0.0).status == "sent"
    gone = decide(POLICY, 1, DeliveryError("HTTP 410", retriable=False, status_code=410), 0.0)
    assert (gone.status, gone.reason) == ("failed", "HTTP 410")
    later = decide(POLICY, 2, DeliveryError("HTTP 500", retriable=True), 0.0)
    assert (later.status, later.retry_in_s) == ("retrying", 10.0)
    last = decide(POLICY, 4, DeliveryError("HTTP 500", retriable=True), 0.0)
    assert last.status == "failed"
    assert last.reason == "gave up after 4 attempts: HTTP 500"


# --- templates ----------------------------------------------------------------------------


def test_templates_see_customer_trigger_rule_and_action() -> None:
    action = make_action(
        {"channel": "log", "message": "x"},
        traits={"name": "Ada", "tier": "gold"},
        trigger={"name": "Order Completed", "properties": {"revenue": 40}},
    )
    renderer = TemplateRenderer()
    context = template_context(action)
    text = (
        "{{ customer.traits.name }}/{{ trigger.properties.revenue * 2 }}/{{ rule.key }}"
        "/v{{ rule.version }}/{{ action.id }}/{{ action.attempt }}"
    )
    assert renderer.render(text, context, field="message") == (
        f"Ada/80/thank-you/v1/{action.action_id}/1"
    )
    # A missing key renders empty, as in Jinja2; `default` supplies a fallback.
    assert renderer.render("[{{ customer.traits.nick }}]", context, field="m") == "[]"
    assert (
        renderer.render("{{ customer.traits.nick | default('friend') }}", context, field="m")
        == "friend"
    )
    assert renderer.render_tree(
        {"a": ["{{ customer.traits.tier }}", 3, None], "b": {"c": "{{ rule.key }}"}},
        context,
        field="payload",
    ) == {"a": ["gold", 3, None], "b": {"c": "thank-you"}}


@pytest.mark.parametrize(
    "source",
    [
        "{{ trigger.properties.cart }}",
        "{{trigger.properties.total}}",
        "{{ trigger.properties.flags }}",
        "{{ trigger.properties.none }}",
        "{{ trigger.properties.items }}",  # a dict method: Jinja finds the attribute first
        "{{ trigger.properties }}",
        "{{ trigger.properties.missing }}",
        "{{ customer }}",
        "{{ nobody }}",
    ],
)
def test_a_template_of_one_variable_renders_as_jinja_does(source: str) -> None:
    context = {
        "customer": {"traits": {}},
        "trigger": {"properties": {"cart": "c-1", "total": 12.5, "flags": [1, True], "none": None}},
    }
    expected = SandboxedEnvironment().from_string(source).render(context)
    assert TemplateRenderer().render(source, context, field="payload.x") == expected


def test_html_templates_escape_what_they_interpolate() -> None:
    context = {"customer": {"traits": {"name": "<b>Ada & Co</b>"}}}
    renderer = TemplateRenderer()
    html = renderer.render("<p>{{ customer.traits.name }}</p>", context, field="html", html=True)
    assert html == "<p>&lt;b&gt;Ada &amp; Co&lt;/b&gt;</p>"
    assert renderer.render("{{ customer.traits.name }}", context, field="body") == "<b>Ada & Co</b>"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ customer.name", "template error in payload.x, line 1"),
        ("{{ x | nope }}", "No filter named 'nope'"),
        ("{{ customer.__class__.__mro__ }}", "templates may not do"),
        ("{{ ''.__class__.__subclasses__() }}", "templates may not do"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ customer.traits.missing.deeper }}", "template error in payload.x"),
        # Built at render time, never folded when compiling: seconds of CPU, gigabytes.
        ("{{ 7 ** 8000000 }}", "an exponent above 256"),
        ("{{ 'a' * 200000000 }}", "a repetition of more than"),
        ("{{ [1] * 200000000 }}", "a repetition of more than"),
    ],
)
def test_a_template_that_does_not_render_names_the_field_and_why(source: str, message: str) -> None:
    with pytest.raises(TemplateRenderError) as caught:
        TemplateRenderer().render(source, {"customer": {"traits": {}}}, field="payload.x")
    assert message in str(caught.value)
    assert caught.value.retriable is False


def test_saving_a_template_never_computes_it_and_deep_nesting_is_a_template_error() -> None:
    # Jinja folds constant expressions when compiling: 7 ** 8000000 took seconds and then
    # raised ValueError (a 500 from the api). Bounded operators are left to render time.
    for source in ("{{ 7 ** 8000000 }}", "{{ 'a' * 200000000 }}"):
        check_template(source, "payload.x")
    with pytest.raises(TemplateError, match="nests too deeply"):
        check_template("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "payload.x")


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "turns",
        ),
        (
            "{% set r = range(100000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}",
            "turns",
        ),
        (
            "{% for a in [0] * 1000000 %}{% for b in 'x' * 1000000 %}{% endfor %}{% endfor %}",
            "turns",
        ),
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}"
            "{{ f(40) }}",
            "turns",
        ),
        ("{{ 'x' | center(1000000000) }}", "sizes go up to"),
        ("{{ range(1) | batch(1000000000, 0) | list }}", "sizes go up to"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses too deeply|turns"),
    ],
)
def test_what_one_render_may_compute_is_bounded(source: str, reason: str) -> None:
    # Each of these would hold the dispatcher for hours or take gigabytes.
    with pytest.raises(TemplateRenderError, match=reason):
        TemplateRenderer().render(source, {}, field="body")


def test_the_bound_is_per_render() -> None:
    renderer = TemplateRenderer()
    # 630,000 turns each: together over the bound, each alone under it.
    source = (
        "{% for i in range(90000) %}{% for j in range(6) %}{% endfor %}{% endfor %}"
        "{{ range(3) | list | length }}"
    )
    assert [renderer.render(source, {}, field="body") for _ in range(3)] == ["3"] * 3
    loops = "{% for p in trigger.products %}{{ p.name }};{% endfor %}"
    context = {"trigger": {"products": [{"name": "a"}, {"name": "b"}]}}
    assert renderer.render(loops, context, field="body") == "a;b;"


# --- offsets ------------------------------------------------------------------------------


def test_commits_stop_at_the_first_unfinished_record() -> None:
    tracker: OffsetTracker[str] = OffsetTracker()
    for offset in (10, 11, 12, 14):
        tracker.track("p0", offset)
    tracker.track("p1", 0)
    assert tracker.committable() == {"p0": 10, "p1": 0}
    tracker.finish("p0", 11)
    tracker.finish("p0", 12)
    assert tracker.committable(["p0"]) == {"p0": 10}  # 10 still in flight
    tracker.finish("p0", 10)
    assert tracker.committable(["p0"]) == {"p0": 14}
    tracker.committed({"p0": 14})
    assert tracker.committable(["p0"]) == {}  # nothing new
    tracker.finish("p0", 14)
    assert tracker.committable() == {"p0": 15, "p1": 0}
    assert tracker.in_flight == 1
    tracker.forget(["p1"])
    tracker.finish("p1", 0)  # finished after the hand-over: ignored
    assert tracker.committable() == {"p0": 15}


# --- private targets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[64:ff9b:1::808:808]/",  # local-use NAT64, whatever it carries
        "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
        "http://[::192.168.0.1]/",  # IPv4-compatible
        "http://0.0.0.0/",
    ],
)
async def test_private_and_loopback_targets_are_refused(url: str) -> None:
    target = httpx.URL(url)
    with pytest.raises(TargetRefusedError, match="SAFAR_WEBHOOK_ALLOW_PRIVATE"):
        await public_addresses(target.host, target.port or 80)


async def test_public_addresses_pass_and_are_the_ones_connected_to() -> None:
    assert await public_addresses("93.184.215.14", 443) == ["93.184.215.14"]
    assert await public_addresses("2606:4700::1111", 443) == ["2606:4700::1111"]
    assert await public_addresses("64:ff9b::808:808", 443) == ["64:ff9b::808:808"]


@pytest.mark.parametrize(
    "url",
    [
        "https://ada:hunter2@example.com:notaport/hook",  # invalid
        "ftp://ada:hunter2@example.com/hook",  # not http(s)
        "https://ada:hunter2@{{ customer.traits.name }}/hook",  # renders to an invalid url
    ],
)
async def test_url_credentials_are_masked_in_delivery_errors(url: str) -> None:
    client = HttpClient(user_agent="test")
    channel = WebhookChannel(
        client, TemplateRenderer(), default_secret=SecretStr(SECRET), timeout_s=1.0
    )
    action = make_action({"channel": "webhook", "url": url}, traits={"name": "[::1"})
    try:
        with pytest.raises(DeliveryError) as raised:
            await channel.deliver(action, template_context(action))
    finally:
        await client.close()
    assert "hunter2" not in str(raised.value)
    assert "[redacted]@" in str(raised.value)


def test_without_credentials_masks_only_the_userinfo() -> None:
    text = "redirect to 'https://u:p@ss@host/a@b?x=//y' and http://host/p"
    assert without_credentials(text) == (
        "redirect to 'https://[redacted]@host/a@b?x=//y' and http://host/p"
    )


def test_unsealing_takes_only_the_credentials_the_record_names() -> None:
    rule_now = {
        "channel": "webhook",
        "url": "https://crm.example/new",
        "secret": "whsec_new",
        "headers": {"Authorization": "Bearer new"},
    }
    # Decided when the rule had a secret and no headers (its url may have been templated).
    record = seal({"channel": "webhook", "url": "https://{{ trigger.host }}/", "secret": "s"})
    assert record == {
        "channel": "webhook",
        "url": "https://{{ trigger.host }}/",
        "sealed": ["secret"],
    }
    assert unseal(record, rule_now) == {
        "channel": "webhook",
        "url": "https://{{ trigger.host }}/",
        "secret": "whsec_new",
    }
    plain = {"channel": "webhook", "url": "https://crm.example/"}
    assert seal(plain) is plain and unseal(plain, rule_now) is plain
