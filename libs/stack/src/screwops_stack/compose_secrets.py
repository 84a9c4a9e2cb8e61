"""docker-compose's production secrets that live in variables: ``make compose-secrets`` writes
them into ``.env`` beside ``docker-compose.yml``, which compose reads to fill in ``${VAR}``.

Compose runs every service in production mode (``SCREWOPS_ENVIRONMENT=production``), which
refuses an API without a token table and a MongoDB URI without credentials, so those must exist
before the first ``docker compose up``. They cannot come from the stack-secrets volume as Kafka's
and MinIO's do: the services read their token tables, the console's and the monitor's tokens and
the MongoDB URI from variables, and MongoDB and Grafana take their first password from one. The
compose file names each with ``${VAR:?...}``, so a stack without ``.env`` refuses to start rather
than falling back to a value every checkout of this repository knows.

What is made:

* each gRPC API's token table (``SCREWOPS_<API>_AUTH_TOKENS``): the console's principal with the
  role it needs there (delegating on labeling and the registry, so it acts as the user logged in
  to it), the monitor's on the registry (its rollout controller advances and aborts), and
  ``operator``, the CLI on the host, with the operator role everywhere;
* the tokens those principals present: ``SCREWOPS_CONSOLE_<API>_TOKEN``,
  ``SCREWOPS_MONITOR_REGISTRY_TOKEN``, and the operator's ``SCREWOPS_<API>_TOKEN``, the variables
  the CLI reads (``set -a; . ./.env; set +a`` gives a shell the operator's tokens);
* MongoDB's root password (``SCREWOPS_MONGO_ROOT_PASSWORD``) and Grafana's admin password
  (``SCREWOPS_GRAFANA__ADMIN_PASSWORD``).

A value already in the file is kept, a token table too (add a line's cameras to the gateway's
there): MongoDB and Grafana set their password only when their volume is first initialised, so a
new one would lock the services out. The file is owner-only, and every value is single-quoted,
which compose and a shell both read literally.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "API_CALLERS",
    "PASSWORD_VARIABLES",
    "Caller",
    "main",
    "read_env_file",
    "variables",
    "write_env_file",
]

OPERATOR = "operator"
"""The CLI's principal on the host, as it is MinIO's."""


@dataclass(frozen=True)
class Caller:
    """A principal calling one gRPC API: its role there, and the variable its token is read
    from by the principal's own process."""

    principal: str
    role: str
    token_variable: str
    delegates: bool = False


API_CALLERS: dict[str, tuple[Caller, ...]] = {
    "gateway": (
        Caller("console", "line", "SCREWOPS_CONSOLE_GATEWAY_TOKEN"),
        Caller(OPERATOR, "operator", "SCREWOPS_GATEWAY_TOKEN"),
    ),
    "ingestion": (
        Caller("console", "viewer", "SCREWOPS_CONSOLE_INGESTION_TOKEN"),
        Caller(OPERATOR, "operator", "SCREWOPS_INGESTION_TOKEN"),
    ),
    "labeling": (
        Caller("console", "labeler", "SCREWOPS_CONSOLE_LABELING_TOKEN", delegates=True),
        Caller(OPERATOR, "operator", "SCREWOPS_LABELING_TOKEN"),
    ),
    "registry": (
        Caller("console", "operator", "SCREWOPS_CONSOLE_REGISTRY_TOKEN", delegates=True),
        Caller("monitor", "operator", "SCREWOPS_MONITOR_REGISTRY_TOKEN"),
        Caller(OPERATOR, "operator", "SCREWOPS_REGISTRY_TOKEN"),
    ),
}
"""Who calls each gRPC API inside compose or from the host, as docs/operations.md lays out."""

PASSWORD_VARIABLES = ("SCREWOPS_MONGO_ROOT_PASSWORD", "SCREWOPS_GRAFANA__ADMIN_PASSWORD")

_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def _secret() -> str:
    """URL-safe, so it goes into a MongoDB URI unescaped; 43 characters, well above the
    tokens' minimum (``screwops_settings.MIN_TOKEN_CHARS``)."""
    return secrets.token_urlsafe(32)


def variables(existing: dict[str, str]) -> dict[str, str]:
    """Every variable of ``.env``: ``existing``'s values where they are set (a token table
    included, so a line's camera added to the gateway's stays), new secrets and the token tables
    built from the tokens otherwise."""
    values = dict(existing)
    for callers in API_CALLERS.values():
        for caller in callers:
            values.setdefault(caller.token_variable, _secret())
    for name in PASSWORD_VARIABLES:
        values.setdefault(name, _secret())
    for api, callers in API_CALLERS.items():
        table = [
            {
                "principal": caller.principal,
                "role": caller.role,
                "token": values[caller.token_variable],
                **({"delegates": True} if caller.delegates else {}),
            }
            for caller in callers
        ]
        values.setdefault(f"SCREWOPS_{api.upper()}_AUTH_TOKENS", json.dumps(table))
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of ``path`` as this module writes them (``NAME='value'``); none if absent."""
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        if match := _LINE.match(line.strip()):
            value = match.group("value")
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
            found[match.group("name")] = value
    return found


def write_env_file(path: Path) -> list[str]:
    """Write ``path`` (see the module docstring); returns the names of the variables it added."""
    existing = read_env_file(path)
    values = variables(existing)
    for name, value in values.items():
        if "'" in value or "\n" in value:
            raise ValueError(f"{name} cannot be single-quoted: remove it from {path} to remake it")
    lines = [
        "# docker-compose's production secrets, made by `make compose-secrets`",
        "# (screwops_stack.compose_secrets); kept on later runs. Never commit this file.",
        *(f"{name}='{value}'" for name, value in sorted(values.items())),
    ]
    path.touch(mode=0o600, exist_ok=True)
    os.chmod(path, 0o600)
    path.write_text("\n".join(lines) + "\n")
    return sorted(set(values) - set(existing))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m screwops_stack.compose_secrets")
    parser.add_argument("--out", type=Path, default=Path(".env"), help="the file (./.env)")
    args = parser.parse_args(argv)
    added = write_env_file(args.out)
    print(f"{args.out}: {len(added)} new, the rest kept" if added else f"{args.out}: all kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
