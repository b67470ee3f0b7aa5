"""``safar apply``, ``safar export`` and ``safar api-key`` against a real api process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner, Result

from services.cli import app
from tests.conftest import Credentials
from tests.stack import ServiceProcess

pytestmark = pytest.mark.timeout(120)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(*args: str, url: str, key: str | None, data_dir: Path | None = None) -> Result:
    env = {"SAFAR_API_URL": url, "SAFAR_API_KEY": key}
    if data_dir is not None:
        env = {"SAFAR_API_URL": None, "SAFAR_API_KEY": None, "SAFAR_DATA_DIR": str(data_dir)}
    return CliRunner().invoke(app, list(args), env=env)


async def test_apply_export_and_api_keys_from_the_command_line(
    credentials: Credentials, service: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    api = await service("api").start()
    admin = credentials.admin_key
    shop = str(EXAMPLES / "online-shop.yaml")

    preview = run("apply", "-f", shop, "--dry-run", url=api.url, key=admin)
    assert preview.exit_code == 0, preview.output
    lines = preview.stdout.splitlines()
    assert "~ journey purchase" in lines
    assert "+ rule thank-you" in lines and "+ rule delivery-follow-up" in lines
    assert "0 to create" not in preview.stdout
    assert lines[-2:] == [
        "6 to create, 1 to update, 0 to delete, 0 unchanged",
        "dry run: nothing was changed",
    ]
    async with httpx.AsyncClient() as client:
        rules = await client.get(
            f"{api.url}/v1/rules", headers={"Authorization": f"Bearer {admin}"}
        )
    assert rules.json() == []

    applied = run("apply", "-f", shop, url=api.url, key=admin)
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines()[-1].startswith("applied as configuration version ")

    # Export, apply the export: nothing to do. JSON export is the api's own answer.
    exported = tmp_path / "exported.yaml"
    written = run("export", "-o", str(exported), url=api.url, key=admin)
    assert written.exit_code == 0, written.output
    exported_rules = yaml.safe_load(exported.read_text())["rules"]
    assert [r["key"] for r in exported_rules] == [
        "abandoned-cart",
        "delivery-follow-up",
        "loyalty-offer",
        "support-ticket-to-crm",
        "thank-you",
        "thank-you-crm",
    ]
    again = run("apply", "-f", str(exported), url=api.url, key=admin)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[-2:] == [
        "0 create, 0 update, 0 delete, 7 unchanged",
        "nothing to apply",
    ]
    as_json = run("export", "--format", "json", url=api.url, key=admin)
    assert json.loads(as_json.stdout) == yaml.safe_load(exported.read_text())

    # A change shows field by field, and --json gives the api's answer.
    bundle = yaml.safe_load(exported.read_text())
    bundle["rules"][0]["wait"]["for"] = "45m"
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(bundle))
    diff = run("apply", "-f", str(changed), "--dry-run", url=api.url, key=admin)
    assert diff.exit_code == 0, diff.output
    assert '    wait.for: "30m" -> "45m"' in diff.stdout.splitlines()
    raw = run("apply", "-f", str(changed), "--dry-run", "--json", url=api.url, key=admin)
    assert json.loads(raw.stdout)["changes"][0]["fields"] == [
        {"path": "wait.for", "before": "30m", "after": "45m"}
    ]

    # API keys: an editor may apply, a viewer may not; the key is alone on stdout.
    created = run("api-key", "create", "--role", "editor", "--name", "ops", url=api.url, key=admin)
    assert created.exit_code == 0, created.output
    editor = created.stdout.strip()
    assert editor.startswith("sk_") and "ops" in created.stderr
    assert run("apply", "-f", str(changed), url=api.url, key=editor).exit_code == 0
    viewer = run("api-key", "create", "--role", "viewer", "--name", "ro", url=api.url, key=admin)
    refused = run("apply", "-f", shop, url=api.url, key=viewer.stdout.strip())
    assert refused.exit_code == 1
    assert refused.stderr.strip() == "403 forbidden: this needs the editor role; the key is viewer"
    listed = run("api-key", "list", url=api.url, key=admin)
    names = [line.split(maxsplit=4)[-1] for line in listed.stdout.splitlines()]
    assert names == ["development admin", "ops", "ro"]
    key_id = listed.stdout.splitlines()[1].split()[0]
    assert run("api-key", "revoke", key_id, url=api.url, key=admin).exit_code == 0
    revoked = run("export", url=api.url, key=editor)
    assert revoked.exit_code == 1 and revoked.stderr.startswith("401 unauthorized")

    # Errors: an invalid bundle names the field and position; nothing is changed.
    broken = tmp_path / "broken.yaml"
    broken.write_text(exported.read_text().replace("30m", "30 minutes", 1))
    failed = run("apply", "-f", str(broken), url=api.url, key=admin)
    assert failed.exit_code == 1
    assert failed.stderr.startswith(
        "422 invalid: rules[0].wait.for: '30 minutes' is not a duration"
    )
    missing = run("apply", "-f", str(tmp_path / "nope.yaml"), url=api.url, key=admin)
    assert missing.exit_code == 2 and "cannot read" in missing.stderr

    # Without options or environment, .safar/dev.json (as `safar dev` writes it) is used.
    (tmp_path / "dev.json").write_text(json.dumps({"api_url": api.url, "admin_api_key": admin}))
    from_dev = run("export", url=api.url, key=None, data_dir=tmp_path)
    assert from_dev.exit_code == 0, from_dev.output
    assert yaml.safe_load(from_dev.stdout)["rules"][0]["wait"]["for"] == "45m"
    nothing = run("export", url=api.url, key=None, data_dir=tmp_path / "empty")
    assert nothing.exit_code == 2 and "safar dev" in nothing.stderr
    down = run("export", url="http://127.0.0.1:9", key=admin)
    assert down.exit_code == 2 and "cannot reach the api" in down.stderr
