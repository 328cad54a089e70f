"""The whole platform on one machine: what `gofund up` runs and the e2e tests start.

Order: PostgreSQL and the Mongo-wire server, databases and migrations, the four
services, then Envoy (config rendered from envoy/envoy.yaml). `start` returns
once every service answers SERVING and Envoy reports every cluster healthy;
`stop` stops everything in reverse order. Children inherit this process's
environment plus `overrides`, so they read the same settings the stack used.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from services.common.config import POSTGRES_DATABASES, Settings
from services.common.db import ensure_database, upgrade
from services.common.server import METRICS_PORT_OFFSET
from services.stack import embedded
from services.stack.envoy_config import SERVICES, EdgeConfig, write

HEALTHY_TIMEOUT_S = 30.0
REPLICA_PORT_STEP = 100
# Every port a stack listens on, by the variable that moves it.
PORT_VARIABLES = (
    "GOFUND_POSTGRES_PORT",
    "GOFUND_MONGODB_PORT",
    "GOFUND_IDENTITY_PORT",
    "GOFUND_GOALS_PORT",
    "GOFUND_LEDGER_PORT",
    "GOFUND_PAYMENTS_PORT",
    "GOFUND_ENVOY_PORT",
    "GOFUND_ENVOY_ADMIN_PORT",
    "GOFUND_SMTP_PORT",
    "GOFUND_PAYSTACK_SIM_PORT",
)


def free_port_environment(data_dir: Path) -> dict[str, str]:
    """Overrides for a stack of its own beside others (tests, the chaos run): a private data
    directory and free ports for every server, each service's metrics port (its gRPC port
    + METRICS_PORT_OFFSET) free too."""
    overrides = {"GOFUND_DATA_DIR": str(data_dir)}
    taken: set[int] = set()
    for variable in PORT_VARIABLES:
        while True:
            port = embedded.free_port()
            metrics = port + METRICS_PORT_OFFSET
            if port in taken or metrics in taken or not embedded.port_is_free(metrics):
                continue
            taken |= {port, metrics}
            overrides[variable] = str(port)
            break
    return overrides


class StackError(Exception):
    """The stack cannot start; the message says why in one line (plus a log tail if useful)."""


class Stack:
    def __init__(
        self,
        overrides: Mapping[str, str] | None = None,
        *,
        durable: bool = True,
        external_services: Sequence[str] = (),
        replicas: int = 1,
    ) -> None:
        self.overrides = dict(overrides or {})
        if replicas < 1:
            raise StackError("replicas must be at least 1")
        self.replicas = replicas
        # Services the caller runs itself on their configured ports (a test that
        # injects a clock into goals, say): not started here, and Envoy's
        # health is not awaited for them; call `wait_edge_healthy` once they run.
        self.external_services = tuple(external_services)
        self.env = {**os.environ, **self.overrides}
        self.settings = Settings(**self.overrides)  # type: ignore[arg-type]
        # Paystack's checkout sends the payer back to the web app's return page (Envoy
        # serves the app on the API's origin), which verifies the payment.
        self.env.setdefault(
            "GOFUND_PAYSTACK_CALLBACK_URL", f"http://127.0.0.1:{self.settings.envoy_port}/#/payments/return"
        )
        if replicas > 1:
            # Services reach every replica of each other, balanced by gRPC's
            # round robin over this address list (see services.common.clients).
            for name in SERVICES:
                variable = f"GOFUND_{name.upper()}_TARGET"
                if variable not in self.overrides:
                    self.env[variable] = "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in self.replica_ports(name))
        self.data_dir = self.settings.data_dir.resolve()
        self.logs_dir = self.data_dir / "logs"
        self.durable = durable
        self.processes: list[embedded.ManagedProcess] = []
        # Replica 0 of each service; `replica_processes` has all of them.
        self.services: dict[str, embedded.ManagedProcess] = {}
        self.replica_processes: dict[str, list[embedded.ManagedProcess]] = {}
        self.envoy: embedded.ManagedProcess | None = None
        self._lock_path = self.data_dir / "stack.pid"

    # -- ports -----------------------------------------------------------------
    def ports(self) -> dict[str, int]:
        s = self.settings
        return {
            "GOFUND_POSTGRES_PORT": s.postgres_port,
            "GOFUND_MONGODB_PORT": s.mongodb_port,
            "GOFUND_IDENTITY_PORT": s.identity_port,
            "GOFUND_GOALS_PORT": s.goals_port,
            "GOFUND_LEDGER_PORT": s.ledger_port,
            "GOFUND_PAYMENTS_PORT": s.payments_port,
            "GOFUND_ENVOY_PORT": s.envoy_port,
            "GOFUND_ENVOY_ADMIN_PORT": s.envoy_admin_port,
            "GOFUND_SMTP_PORT": s.smtp_port,
            "GOFUND_PAYSTACK_SIM_PORT": s.paystack_simulator_port,
            **{
                f"GOFUND_{name.upper()}_PORT (replica {i})": port
                for name in SERVICES
                for i, port in enumerate(self.replica_ports(name))
                if i > 0
            },
            # Each service serves metrics on its gRPC port + 1000 (GOFUND_METRICS_PORT unset).
            **{
                f"GOFUND_{name.upper()}_PORT + {METRICS_PORT_OFFSET} (metrics, replica {i})": port + METRICS_PORT_OFFSET
                for name in SERVICES
                for i, port in enumerate(self.replica_ports(name))
            },
        }

    def replica_ports(self, name: str) -> list[int]:
        """Replica i of a service listens on its port + 100 * i (50051, 50151, ...)."""
        base: int = getattr(self.settings, f"{name}_port")
        return [base + REPLICA_PORT_STEP * i for i in range(self.replicas)]

    def _preflight(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._lock_path.exists():
            with contextlib.suppress(ValueError, OSError):
                pid = int(self._lock_path.read_text().strip())
                os.kill(pid, 0)
                raise StackError(f"a GoFund stack is already running from {self.data_dir} (pid {pid}); stop it first")
        busy = [f"{name}={port}" for name, port in self.ports().items() if not embedded.port_is_free(port)]
        if busy:
            raise StackError(f"port(s) already in use: {', '.join(busy)}; free them or set these variables")
        self._lock_path.write_text(str(os.getpid()))

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        """The stores, the simulator and the SMTP sink side by side (migrations run
        meanwhile, once PostgreSQL answers), then every service replica side by side,
        then Envoy once they all answer."""
        self._preflight()
        try:
            postgres, *others = self._stores()
            self._start_together([postgres])
            self._spawned(others)
            self._migrate()
            self._wait_ready(others)
            self._start_together(
                [
                    self._service_process(name, replica)
                    for name in SERVICES
                    if name not in self.external_services
                    for replica in range(self.replicas)
                ]
            )
            self._start_envoy()
        except BaseException:
            self.stop()
            raise

    def _start(self, process: embedded.ManagedProcess) -> embedded.ManagedProcess:
        self._start_together([process])
        return process

    def _start_together(self, processes: Sequence[embedded.ManagedProcess]) -> None:
        self._spawned(processes)
        self._wait_ready(processes)

    def _spawned(self, processes: Sequence[embedded.ManagedProcess]) -> None:
        for process in processes:
            process.spawn()
            self.processes.append(process)  # so stop() stops it whatever happens next

    @staticmethod
    def _wait_ready(processes: Sequence[embedded.ManagedProcess]) -> None:
        try:
            for process in processes:
                process.wait_ready()
        except embedded.EmbeddedError as exc:
            raise StackError(str(exc)) from None

    def _stores(self) -> list[embedded.ManagedProcess]:
        """PostgreSQL first; then the Mongo-wire server, the SMTP sink and the Paystack
        simulator (development only: production talks to Paystack itself, PAYSTACK_BASE_URL)."""
        s = self.settings
        return [
            embedded.postgres(
                self.data_dir / "postgres",
                s.postgres_port,
                self.logs_dir / "postgres.log",
                durable=self.durable,
            ),
            embedded.mongo_wire(self.data_dir / "mongodb", s.mongodb_port, self.logs_dir / "mongodb.log"),
            embedded.ManagedProcess(
                "smtp sink",
                [str(embedded.BIN / "gofund"), "smtp-sink"],
                log_path=self.logs_dir / "smtp-sink.log",
                ready=embedded.tcp_ready(s.smtp_port),
                env=self.env,
            ),
            embedded.ManagedProcess(
                "paystack simulator",
                [str(embedded.BIN / "gofund"), "paystack-sim"],
                log_path=self.logs_dir / "paystack-sim.log",
                ready=embedded.tcp_ready(self.settings.paystack_simulator_port),
                env=self.env,
            ),
        ]

    def _migrate(self) -> None:
        for service in POSTGRES_DATABASES:
            url = self.settings.database_url(service)
            ensure_database(url)
            upgrade(service, url)

    def start_service(self, name: str, replica: int = 0) -> embedded.ManagedProcess:
        """Start (or restart) one replica of a service."""
        return self._start(self._service_process(name, replica))

    def _service_process(self, name: str, replica: int) -> embedded.ManagedProcess:
        """One replica's process, recorded as that replica (not yet started)."""
        port = self.replica_ports(name)[replica]
        env = {**self.env, f"GOFUND_{name.upper()}_PORT": str(port)}
        log_name = name if replica == 0 else f"{name}-{replica}"
        process = embedded.gofund_service(name, port, env, self.logs_dir / f"{log_name}.log")
        replicas = self.replica_processes.setdefault(name, [])
        if replica < len(replicas):
            replicas[replica] = process
        else:
            replicas.append(process)
        if replica == 0:
            self.services[name] = process
        return process

    def _start_envoy(self) -> None:
        s = self.settings
        config = EdgeConfig(
            public_port=s.envoy_port,
            admin_port=s.envoy_admin_port,
            upstreams={name: [("127.0.0.1", port) for port in self.replica_ports(name)] for name in SERVICES},
            auth_rate_per_minute=s.auth_rate_per_minute,
            webhook_rate_per_minute=s.webhook_rate_per_minute,
            unary_timeout_ms=s.edge_timeout_ms,
            web_origins=s.cors_origins,
        )
        path = write(config, self.data_dir / "envoy.yaml")
        # Envoy instances on one machine need distinct shared-memory ids.
        self.envoy = self._start(
            embedded.envoy(path, s.envoy_admin_port, self.logs_dir / "envoy.log", base_id=s.envoy_admin_port)
        )
        self.wait_edge_healthy(ignore=self.external_services)

    def wait_edge_healthy(self, timeout_s: float = HEALTHY_TIMEOUT_S, ignore: Sequence[str] = ()) -> None:
        """Wait until Envoy routes to every host of every cluster (but `ignore`), as of health
        checks made after this call began.

        A host's health in /clusters is as of its last check, so right after a restart it may
        still show the killed process's HEALTHY, and a check sent to a process that was stopped
        may still be on its way to failing it. So this waits for the checks in flight when it
        was called to finish, then for two passing checks of every host after that (a host
        that passes once right after a restart and then fails is caught), and only then
        takes "no host unhealthy" as the answer.
        """
        names = [name for name in SERVICES if name not in ignore]
        deadline = time.monotonic() + timeout_s
        at_entry = self._health_check_counts()
        settled: dict[str, int] = {}  # passing checks counted once the checks in flight at entry ended
        waiting: list[str] = names
        while time.monotonic() < deadline:
            counts = self._health_check_counts()
            hosts = self._cluster_hosts()
            for name in names:
                started, _, _ = at_entry.get(name, (0, 0, 0))
                _, passed, failed = counts.get(name, (0, 0, 0))
                if name not in settled and name in counts and passed + failed >= started:
                    settled[name] = passed
            unhealthy = set(self.unhealthy_clusters())
            waiting = [
                name
                for name in names
                if name in unhealthy
                or name not in settled
                or counts[name][1] < settled[name] + 2 * len(hosts.get(name, ()))
                or not hosts.get(name)
            ]
            if not waiting:
                return
            time.sleep(0.1)
        raise StackError(f"Envoy reports unhealthy clusters after {timeout_s:.0f}s: {', '.join(waiting)}")

    def _admin(self, path: str) -> Any:
        return httpx.get(f"http://127.0.0.1:{self.settings.envoy_admin_port}{path}", timeout=1).json()

    def _health_check_counts(self) -> dict[str, tuple[int, int, int]]:
        """Per cluster, Envoy's counters of health checks (started, passed, failed)."""
        try:
            stats = self._admin("/stats?format=json&filter=^cluster\\.[a-z]+\\.health_check\\.")
            values = {s["name"]: int(s["value"]) for s in stats["stats"] if "value" in s}
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return {}
        counts = {}
        for name in SERVICES:
            prefix = f"cluster.{name}.health_check."
            if prefix + "attempt" in values:
                counts[name] = (values[prefix + "attempt"], values[prefix + "success"], values[prefix + "failure"])
        return counts

    def _cluster_hosts(self) -> dict[str, list[dict[str, dict[str, object]]]]:
        try:
            statuses = self._admin("/clusters?format=json")["cluster_statuses"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return {}
        return {cluster["name"]: cluster.get("host_statuses", []) for cluster in statuses}

    def unhealthy_clusters(self) -> list[str]:
        hosts = self._cluster_hosts()
        if not hosts:
            return list(SERVICES)
        return [name for name, statuses in hosts.items() if not statuses or any(map(_host_unhealthy, statuses))]

    def crashed(self) -> embedded.ManagedProcess | None:
        """A child that has exited on its own, if any."""
        return next((p for p in self.processes if not p.running()), None)

    def stop(self) -> None:
        """Envoy first (no new traffic); then every service side by side, so the
        streams between them end as both ends stop; then what they used."""
        services = {p for replicas in self.replica_processes.values() for p in replicas}
        edge = {self.envoy} if self.envoy is not None else set()
        embedded.stop_together([p for p in self.processes if p in edge])
        embedded.stop_together([p for p in self.processes if p in services])
        embedded.stop_together([p for p in self.processes if p not in edge | services])
        self.processes.clear()
        self.services.clear()
        self.replica_processes.clear()
        with contextlib.suppress(FileNotFoundError):
            if self._lock_path.read_text().strip() == str(os.getpid()):
                self._lock_path.unlink()

    def endpoints(self) -> str:
        s = self.settings
        lines = [
            f"  Envoy, JSON and gRPC   http://127.0.0.1:{s.envoy_port}  (also the web app at /, /openapi.json)",
            f"  Envoy admin            http://127.0.0.1:{s.envoy_admin_port}  (loopback only)",
            *(
                f"  {name:<22} {', '.join(f'127.0.0.1:{p}' for p in self.replica_ports(name))}"
                "  (gRPC, reflection, health)"
                for name in SERVICES
            ),
            f"  PostgreSQL             postgresql://postgres@127.0.0.1:{s.postgres_port}",
            f"  MongoDB wire           {s.mongodb_url}",
            f"  SMTP sink              127.0.0.1:{s.smtp_port}  (mail kept in {self.data_dir / 'mail.jsonl'})",
            f"  Paystack simulator     {s.paystack_url}  (checkout pages, /_sim controls)",
            f"  data and logs          {self.data_dir}",
        ]
        return "\n".join(lines)


def _host_unhealthy(host: dict[str, dict[str, object]]) -> bool:
    health = host["health_status"]
    return bool(health.get("failed_active_health_check")) or health.get("eds_health_status") != "HEALTHY"
