"""Console's entry point: ``python -m screwops_console`` serves the web app;
``python -m screwops_console add-user <name> <role>`` adds a local account (or sets its role and
password), the password read from the terminal, or from stdin when it is not one."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import sys

import uvicorn
from screwops_settings import Role
from screwops_storage import ObjectStore, database
from screwops_telemetry import setup_telemetry

from screwops_console.accounts import AccountError, AccountFile, first_admin
from screwops_console.config import ConsoleSettings
from screwops_console.records import MinioReports, MongoRuns
from screwops_console.web import create_app

log = logging.getLogger("screwops.console")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m screwops_console")
    commands = parser.add_subparsers(dest="command")
    add = commands.add_parser("add-user", help="add a local account, or set its role and password")
    add.add_argument("name")
    add.add_argument("role", choices=[role.value for role in Role])
    arguments = parser.parse_args(argv)
    settings = ConsoleSettings()
    if arguments.command == "add-user":
        add_user(settings, arguments.name, Role(arguments.role))
    else:
        serve(settings)


def add_user(settings: ConsoleSettings, name: str, role: Role) -> None:
    """Hash the password typed (twice, unechoed) or piped in and write the account."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("the passwords differ; nothing written")
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        AccountFile(settings.accounts_path).add(name, role, password)
    except AccountError as exc:
        raise SystemExit(f"{exc}; nothing written") from None
    print(f"{name} ({role}) written to {settings.accounts_path}")


def open_exposure(settings: ConsoleSettings, accounts: AccountFile) -> str | None:
    """Why the console must not start: listening beyond loopback with no account to log in
    with, local or from an OIDC issuer; None when it may."""
    if settings.on_loopback or settings.oidc_configured or accounts.names():
        return None
    return (
        f"the console refuses to listen on {settings.http_host} with no account in "
        f"{accounts.path} and no OIDC issuer: add one with 'python -m screwops_console add-user "
        "<name> admin', or set SCREWOPS_CONSOLE_FIRST_ADMIN=true, or configure "
        "SCREWOPS_CONSOLE_OIDC_ISSUER, or bind SCREWOPS_CONSOLE_HTTP_HOST=127.0.0.1"
    )


def serve(settings: ConsoleSettings) -> None:
    telemetry = setup_telemetry(
        settings.service_name,
        settings.stack,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        instrument_grpc=True,
        log_level=settings.log_level,
    )
    accounts = AccountFile(settings.accounts_path)
    if settings.first_admin and first_admin(accounts, settings.admin_password_file):
        log.warning(
            "made the first console account, admin; its password is in %s",
            settings.admin_password_file,
        )
    if (refusal := open_exposure(settings, accounts)) is not None:
        log.error("%s", refusal)
        telemetry.shutdown()
        raise SystemExit(refusal)
    db = database(settings.stack.mongo, appname=settings.service_name)
    app = create_app(
        settings,
        MongoRuns(db),
        MinioReports(ObjectStore.from_settings(settings.stack.minio)),
        meter_provider=telemetry.meter_provider,
    )
    # uvicorn stops on SIGTERM/SIGINT after in-flight requests finish; log_config=None keeps the
    # trace-stamped logging that setup_telemetry installed.
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=30,
        )
    )
    log.info("console serving http://%s:%d", settings.http_host, settings.http_port)
    try:
        asyncio.run(server.serve())
    finally:
        db.client.close()
        telemetry.shutdown()


if __name__ == "__main__":
    main()
