"""A throwaway PostgreSQL server for tests and benchmarks: initdb in a temp dir, a Unix socket, stop.

    with PostgresServer(tmp_dir) as pg:
        uri = pg.new_database()          # postgresql://tengine@/t_<hex>?host=<socket dir>

The server binaries are Debian's `postgresql` package (`make test` installs it where missing).
PostgreSQL refuses to run as root, so under root the server runs as the `postgres` user (or
`nobody`) and its directory is handed to that user. It listens on a Unix socket only (no TCP
port to collide with), trusts local connections, and for tests runs with `fsync=off`
(`durable=True` keeps the defaults: the benchmark measures what a real server commits).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path


def server_bin(name: str) -> str:
    """The path of a PostgreSQL server binary, or an error saying how to get it."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's `{name}` is not installed: `apt-get install postgresql` "
                           "(`make test` does it where it can)")
    return found


class PostgresServer:
    USER = "tengine"

    def __init__(self, base: Path, durable: bool = False):
        self.base = Path(base)
        self.data, self.socket_dir, self.log = self.base / "data", self.base / "s", self.base / "log"
        self.durable = durable
        self.run_as: list[str] = []
        if os.getuid() == 0:  # the server will not run as root
            user = next(u for u in ("postgres", "nobody") if _user_exists(u))
            self.run_as = ["runuser", "-u", user, "--"]
            self.base.mkdir(parents=True, exist_ok=True)
            self.socket_dir.mkdir(exist_ok=True)
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
            for path in (self.base, self.socket_dir):
                os.chown(path, uid, gid)
            for parent in self.base.parents:  # the user must be able to reach the directory
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
        self.socket_dir.mkdir(parents=True, exist_ok=True)

    def _run(self, *cmd: str) -> None:
        out = subprocess.run([*self.run_as, *cmd], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}{out.stderr}{log}")

    def start(self) -> PostgresServer:
        self._run(server_bin("initdb"), "-D", str(self.data), "-U", self.USER, "--auth=trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        options = [f"-k {self.socket_dir}", "-c listen_addresses=''", "-c max_connections=300"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run(server_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                  "-t", "60", "-o", " ".join(options), "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(server_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def uri(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        """A fresh, empty database on this server; its URI."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=str(self.socket_dir), user=self.USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    def add_password_role(self, name: str, password: str) -> None:
        """A login role that must give its password (scram-sha-256 on the socket), with a
        database of the same name it owns, for tests of credentials that come from the
        environment or ~/.pgpass; the other roles keep trust."""
        import psycopg

        hba = self.data / "pg_hba.conf"
        hba.write_text(f"local all {name} scram-sha-256\n" + hba.read_text())  # first match wins
        self._run(server_bin("pg_ctl"), "-D", str(self.data), "reload")
        with psycopg.connect(host=str(self.socket_dir), user=self.USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
            conn.execute(f'CREATE DATABASE "{name}" OWNER {name}')  # a database of its own

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
