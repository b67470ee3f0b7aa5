"""``safar apply``, ``safar export`` and ``safar api-key``: configuration over the api's HTTP.

They find the api in ``--api-url``/``SAFAR_API_URL`` and authenticate with
``--api-key``/``SAFAR_API_KEY``; either falls back to what ``safar dev`` wrote to
``.safar/dev.json`` (``api_url``, ``admin_api_key``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import httpx
import typer
import yaml

from shared.settings import Settings

ApiUrl = Annotated[
    str | None,
    typer.Option("--api-url", envvar="SAFAR_API_URL", help="The api, e.g. http://host:8080."),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="SAFAR_API_KEY", help="An API key (Bearer).", show_default=False
    ),
]

api_keys = typer.Typer(
    help="Create, list and revoke API keys (needs an admin key).", no_args_is_help=True
)


def _fail(message: str, status: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(status)


class ApiClient:
    """The few calls the commands make; errors become a message and a non-zero exit."""

    def __init__(self, api_url: str | None, api_key: str | None) -> None:
        if not api_url or not api_key:
            dev = self._dev_json()
            api_url = api_url or dev.get("api_url")
            api_key = api_key or dev.get("admin_api_key")
        if not api_url or not api_key:
            _fail(
                "no api to talk to: pass --api-url and --api-key (or set SAFAR_API_URL and "
                "SAFAR_API_KEY), or start `safar dev`, which writes .safar/dev.json",
                2,
            )
        self.url = api_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    @staticmethod
    def _dev_json() -> dict[str, str]:
        path = Settings().data_dir / "dev.json"
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def call(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        content_type: str | None = None,
        params: dict[str, str] | None = None,
        json_body: Any = None,
    ) -> Any:
        headers = dict(self._headers)
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = httpx.request(
                method,
                self.url + path,
                content=content,
                json=json_body,
                params=params,
                headers=headers,
                timeout=30.0,
            )
        except httpx.HTTPError as exc:
            _fail(f"cannot reach the api at {self.url}: {exc}", 2)
        if response.status_code >= 400:
            try:
                error = response.json()
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = response.text or response.reason_phrase
            _fail(f"{response.status_code} {message}")
        return None if response.status_code == 204 else response.json()


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, ensure_ascii=False)


def _describe(result: dict[str, Any]) -> str:
    signs = {"create": "+", "update": "~", "delete": "-"}
    lines: list[str] = []
    for change in result["changes"]:
        lines.append(f"{signs[change['change']]} {change['kind']} {change['key']}")
        for field in change["fields"]:
            lines.append(
                f"    {field['path']}: {_show(field['before'])} -> {_show(field['after'])}"
            )
    counts = {kind: 0 for kind in signs}
    for change in result["changes"]:
        counts[change["change"]] += 1
    verb = "to " if result["dry_run"] else ""
    lines.append(
        f"{counts['create']} {verb}create, {counts['update']} {verb}update, "
        f"{counts['delete']} {verb}delete, {result['unchanged']} unchanged"
    )
    if result["dry_run"]:
        lines.append("dry run: nothing was changed")
    elif result["config_version"] is not None:
        lines.append(f"applied as configuration version {result['config_version']}")
    else:
        lines.append("nothing to apply")
    return "\n".join(lines)


def apply(
    file: Annotated[
        Path,
        typer.Option("-f", "--file", help="The bundle (YAML or .json); - reads stdin."),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the api's answer as JSON.")
    ] = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Make the configuration exactly this bundle (YAML or JSON).

    Journeys and rules the bundle does not name are deleted. Everything is checked first
    and applied all or nothing; --dry-run shows the diff and changes nothing.
    """
    if str(file) == "-":
        content = sys.stdin.buffer.read()
    else:
        try:
            content = file.read_bytes()
        except OSError as exc:
            _fail(f"cannot read {file}: {exc}", 2)
    content_type = "application/json" if file.suffix == ".json" else "application/yaml"
    client = ApiClient(api_url, api_key)
    result = client.call(
        "POST",
        "/v1/config/apply",
        content=content,
        content_type=content_type,
        params={"dry_run": "true" if dry_run else "false"},
    )
    typer.echo(json.dumps(result, indent=2) if as_json else _describe(result))


def export(
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    fmt: Annotated[
        Literal["yaml", "json"], typer.Option("--format", help="yaml or json.")
    ] = "yaml",
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Write the whole configuration as a bundle; `safar apply -f` takes it back unchanged."""
    bundle = ApiClient(api_url, api_key).call("GET", "/v1/config/export")
    if fmt == "json":
        text = json.dumps(bundle, indent=2, ensure_ascii=False) + "\n"
    else:
        text = yaml.safe_dump(bundle, sort_keys=False, allow_unicode=True, width=100)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)


@api_keys.command("create")
def create_api_key(
    role: Annotated[
        Literal["admin", "editor", "viewer"],
        typer.Option(help="admin: keys and sources; editor: journeys and rules; viewer: read."),
    ],
    name: Annotated[str, typer.Option(help="Who or what uses it; shown in the audit log.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create an API key. The key is printed once, alone on stdout."""
    created = ApiClient(api_url, api_key).call(
        "POST", "/v1/api-keys", json_body={"name": name, "role": role}
    )
    typer.echo(f"created {created['role']} key {created['name']!r} ({created['id']})", err=True)
    typer.echo(created["api_key"])


@api_keys.command("list")
def list_api_keys(api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """List API keys (never the keys themselves)."""
    for key in ApiClient(api_url, api_key).call("GET", "/v1/api-keys"):
        state = "revoked" if key["revoked_at"] else "active"
        typer.echo(
            f"{key['id']}  {key['role']:<6}  {state:<7}  {key['key_prefix']}…  {key['name']}"
        )


@api_keys.command("revoke")
def revoke_api_key(
    key_id: Annotated[str, typer.Argument(help="The key's id, from `safar api-key list`.")],
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Revoke an API key; it stops working at once."""
    ApiClient(api_url, api_key).call("DELETE", f"/v1/api-keys/{key_id}")
    typer.echo(f"revoked {key_id}", err=True)


def register(app: typer.Typer) -> None:
    """Add ``apply``, ``export`` and the ``api-key`` group to the ``safar`` command."""
    app.command("apply")(apply)
    app.command("export")(export)
    app.add_typer(api_keys, name="api-key")
