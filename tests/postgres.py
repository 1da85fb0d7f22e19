"""A throw-away PostgreSQL server for the tests: `postgres_server` (one per session) and `postgres_url`
(a fresh database per test).

The server is the machine's own binaries (initdb and pg_ctl on PATH, or /usr/lib/postgresql/*/bin),
started on a free port of 127.0.0.1 with its data, socket and log in a temporary folder, trusting
local connections, and stopped at the end (pg_ctl stop -m immediate, then SIGKILL by pid). initdb
refuses to run as root: as root, the server runs as the `postgres` OS user. The tests that use it are
skipped, saying why, only where the binaries cannot be had (.ci/run installs them where it may).

Use: `from postgres import postgres_server, postgres_url  # noqa: F401` in a test module.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USER = "postgres"  # the database superuser, and the OS user the server runs as under root


def find_bin(name: str) -> Path | None:
    """`name` (initdb, pg_ctl, ...) on PATH, else in the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return Path(found).resolve()
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: _version(Path(p)))
    return Path(versions[-1]) if versions else None


def _version(path: Path) -> tuple[int, ...]:
    part = path.parent.parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit()) or (0,)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    root: Path  # data/, the socket and server.log
    port: int = 0
    pid: int | None = None
    as_user: list[str] = field(default_factory=list)  # runuser -u postgres -- (as root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [*self.as_user, *args] if self.as_user else list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root)

    def url(self, database: str) -> str:
        """A plain postgresql:// URL (nntrain picks the installed driver)."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"nntrain_{uuid.uuid4().hex[:10]}"
        result = subprocess.run(
            [str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, f"createdb failed: {result.stderr}"
        return name

    def start(self) -> None:
        initdb = self.run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust",
                          "-E", "UTF8", "--no-sync")
        if initdb.returncode != 0:
            pytest.fail(f"initdb failed (exit {initdb.returncode}):\n{initdb.stdout}\n{initdb.stderr}")
        for _ in range(3):  # a free port may be taken before the server binds it
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root} "
                f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
            )
            started = self.run(str(self.bin_dir / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
                               "-w", "-t", "60", "-o", options)
            if started.returncode == 0:
                self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
                return
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        pytest.fail(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{log[-3000:]}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run(str(self.bin_dir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w", "-t", "20",
                     timeout=60)
        if self.pid is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.1)
            if _alive(self.pid):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by its parent) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _as_user() -> list[str]:
    """The prefix that runs a command as the `postgres` OS user (root only); skips when impossible."""
    import pwd

    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"PostgreSQL: running as root and there is no '{USER}' OS user for initdb (which refuses root)")
    if shutil.which("runuser"):
        return ["runuser", "-u", USER, "--"]
    if shutil.which("su"):
        return ["su", USER, "-s", "/bin/sh", "-c", 'exec "$0" "$@"']  # the command follows as $0 $1 ...
    pytest.skip(f"PostgreSQL: running as root without runuser or su to run initdb as '{USER}'")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server on 127.0.0.1 for this test session."""
    if os.name != "posix":
        pytest.skip("PostgreSQL tests start a server with initdb/pg_ctl (POSIX only)")
    initdb = find_bin("initdb")
    if initdb is None or not (initdb.parent / "pg_ctl").exists():
        pytest.skip(
            "PostgreSQL binaries not found (initdb and pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
            "install them with apt-get install postgresql (.ci/run does as root)"
        )
    as_user = _as_user() if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="nntrain-pg-"))
    if as_user:
        shutil.chown(root, USER, USER)
    server = PostgresServer(initdb.parent, root, as_user=as_user)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """`postgresql://postgres@127.0.0.1:<port>/<a new, empty database>`."""
    return postgres_server.url(postgres_server.create_database())


__all__ = ["PostgresServer", "find_bin", "postgres_server", "postgres_url"]
