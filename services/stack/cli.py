"""The `gofund` command: run the platform, one service, migrations."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from typing import Any

from services.common.config import POSTGRES_DATABASES, ConfigError, load_settings
from services.stack.envoy_config import SERVICES


def _serve(args: argparse.Namespace) -> None:
    # gRPC's C core logs to stderr by itself (a failed bind, say); the service
    # reports those failures as one line, so the core stays quiet unless asked.
    # Must be set before grpc is first imported.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    main = importlib.import_module(f"services.{args.service}.main")
    main.main()


def _migrate(args: argparse.Namespace) -> None:
    from services.common.db import ensure_database, upgrade

    settings = load_settings()
    unknown = set(args.services) - set(POSTGRES_DATABASES)
    if unknown:
        sys.exit(f"gofund migrate: no SQL service named {', '.join(sorted(unknown))}")
    for service in args.services or POSTGRES_DATABASES:
        url = settings.database_url(service)
        if settings.env == "development":
            ensure_database(url)
        upgrade(service, url)
        print(f"{service}: migrated to head")


def _call_internal(command: str, service: str, method: str, request: Any, timeout_ms: int) -> Any:
    """One call to a service's internal API with the service credential, as the
    services call each other; a failed call ends the command with one line."""
    import asyncio

    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc

    from services.common.clients import Channels

    settings = load_settings()
    module = importlib.import_module(f"gofund.{service}.v1.{service}_service_pb2_grpc")
    internal = f"{service.capitalize()}InternalService"

    async def call() -> Any:
        channels = Channels(settings.service_token, default_timeout_ms=timeout_ms, deadline_margin_ms=0)
        descriptor = request.DESCRIPTOR.file.services_by_name[internal]
        try:
            stub = getattr(module, f"{internal}Stub")(channels.get(settings.target(service), [descriptor]))
            return await getattr(stub, method)(request)
        finally:
            await channels.close()

    try:
        return asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        sys.exit(f"gofund {command}: {settings.target(service)}: {exc.code().name}: {exc.details()}")


def _ledger_reconcile(args: argparse.Namespace) -> None:
    from gofund.ledger.v1 import ledger_service_pb2

    report = _call_internal("ledger reconcile", "ledger", "Reconcile", ledger_service_pb2.ReconcileRequest(), 60_000)
    print(f"checked {report.accounts_checked} accounts and {report.entries_checked} entries")
    for d in report.differences:
        print(
            f"  {d.account_id}: stored debits {d.stored_debits} vs entries {d.computed_debits}, "
            f"stored credits {d.stored_credits} vs entries {d.computed_credits}"
        )
    print("no differences" if not report.differences else f"{len(report.differences)} account(s) differ")
    sys.exit(1 if report.differences else 0)


def _reconcile(args: argparse.Namespace) -> None:
    from gofund.payments.v1 import payments_pb2, payments_service_pb2

    response = _call_internal("reconcile", "payments", "Reconcile", payments_service_pb2.ReconcileRequest(), 300_000)
    report = response.reconciliation
    print(
        f"compared {report.goals_checked} goals, {report.payments_checked} payments, {report.payouts_checked} payouts, "
        f"{report.transactions_checked} ledger transactions and {report.paystack_records_checked} Paystack records"
    )
    for d in report.drifts:
        kind = payments_pb2.DriftKind.Name(d.kind).removeprefix("DRIFT_KIND_")
        ids = " ".join(f"{name}={value}" for name, value in sorted(d.ids.items()))
        print(f"  {kind}: {d.detail} [{ids}]")
    print("no drift" if not report.drifts else f"{len(report.drifts)} drift(s)")
    sys.exit(1 if report.drifts else 0)


def _smtp_sink(args: argparse.Namespace) -> None:
    from services.stack import smtp_sink

    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    smtp_sink.main(settings.smtp_port, settings.data_dir / "mail.jsonl")


def _paystack_sim(args: argparse.Namespace) -> None:
    from services.paystack_sim.main import run

    run(load_settings())


def _demo(args: argparse.Namespace) -> None:
    from services.stack.demo import main as demo

    demo(load_settings())


def _admin_create(args: argparse.Namespace) -> None:
    """Give an existing user the admin role (the first admin has no one to ask)."""
    import asyncio

    from services.common.db import Database
    from services.common.errors import DomainError
    from services.identity.main import use_cases

    settings = load_settings()

    async def grant() -> str:
        database = Database("identity", settings.database_url("identity"), pool_size=1)
        try:
            identity = use_cases(settings, database)
            user = await identity.user_by_email(args.email)
            view = await identity.grant(str(user.user.id), "admin")
            return (
                f"{view.user.username} ({view.user.email}) now has roles: {', '.join(view.roles)} "
                f"(sessions already in use see it within {settings.auth_cache_ms / 1000:g} s)"
            )
        finally:
            await database.dispose()

    try:
        print(asyncio.run(grant()))
    except DomainError as exc:
        sys.exit(f"gofund admin create: {exc.message}")


def _up(args: argparse.Namespace) -> None:
    from services.stack.stack import Stack, StackError

    try:
        stack = Stack(replicas=args.replicas)
    except StackError as exc:
        print(f"gofund up: {exc}", file=sys.stderr)
        sys.exit(2)
    stopping = threading.Event()
    # SIGHUP too: a closed terminal must stop the platform, not orphan it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"Starting GoFund from {stack.data_dir} ...", flush=True)
    try:
        stack.start()
    except StackError as exc:
        print(f"gofund up: {exc}", file=sys.stderr)
        sys.exit(1)
    s = stack.settings
    print(
        f"GoFund is up: open http://127.0.0.1:{s.envoy_port}/ in a browser.\n{stack.endpoints()}\n\n"
        "Try:\n"
        f"  http://127.0.0.1:{s.envoy_port}/reference   the API's reference (OpenAPI: /openapi.json)\n"
        f"  curl -s http://127.0.0.1:{s.envoy_port}/v1/goals\n"
        f"  grpcurl -plaintext 127.0.0.1:{s.goals_port} list\n"
        f"  grpcurl -plaintext 127.0.0.1:{s.ledger_port} grpc.health.v1.Health/Check\n\n"
        "Ctrl-C stops everything; data stays in the data directory.",
        flush=True,
    )
    crashed = None
    while not stopping.wait(1.0):
        crashed = stack.crashed()
        if crashed is not None:
            break
    if crashed is not None:
        print(
            f"gofund up: {crashed.name} stopped unexpectedly; last log lines:\n{crashed.tail()}",
            file=sys.stderr,
        )
    print("Stopping GoFund ...", flush=True)
    stack.stop()
    print("Stopped.")
    sys.exit(1 if crashed is not None else 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gofund", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="run the whole platform on embedded servers (Ctrl-C stops it)")
    up.add_argument(
        "--replicas", type=int, default=1, metavar="N", help="processes per service behind Envoy (ports +100 each)"
    )
    up.set_defaults(handler=_up)
    serve = commands.add_parser("serve", help="run one service (reads GOFUND_* settings)")
    serve.add_argument("service", choices=SERVICES)
    serve.set_defaults(handler=_serve)
    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("services", nargs="*", metavar="service", help=f"any of {', '.join(POSTGRES_DATABASES)}")
    migrate.set_defaults(handler=_migrate)
    ledger = commands.add_parser("ledger", help="ledger operations").add_subparsers(
        dest="ledger_command", required=True
    )
    ledger_reconcile = ledger.add_parser(
        "reconcile", help="recompute every balance from the entries and list differences"
    )
    ledger_reconcile.set_defaults(handler=_ledger_reconcile)
    reconcile = commands.add_parser(
        "reconcile", help="compare goals, payments, the ledger and Paystack; list every drift, exit 1 if any"
    )
    reconcile.set_defaults(handler=_reconcile)
    sink = commands.add_parser("smtp-sink", help="run the local mail sink (GOFUND_SMTP_PORT; mail in the data dir)")
    sink.set_defaults(handler=_smtp_sink)
    simulator = commands.add_parser(
        "paystack-sim", help="run the Paystack simulator (GOFUND_PAYSTACK_SIM_PORT; state in the data dir)"
    )
    simulator.set_defaults(handler=_paystack_sim)
    demo = commands.add_parser("demo", help="run the whole story against a running stack (`gofund up`)")
    demo.set_defaults(handler=_demo)
    admin = commands.add_parser("admin", help="administration").add_subparsers(dest="admin_command", required=True)
    create = admin.add_parser("create", help="make an existing user an admin")
    create.add_argument("--email", required=True)
    create.set_defaults(handler=_admin_create)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ConfigError as exc:
        print(f"gofund {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
