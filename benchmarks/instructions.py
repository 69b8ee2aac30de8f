"""Section 2's requests counted in CPU instructions (valgrind), not timed.

The timed figures of section 2 move by tenths of the ratio from run to run
on a shared machine: another process takes the CPU, caches are cold.  The
number of instructions a request runs does not: valgrind's cachegrind counts
them, the same for the same code and installation whatever else the machine
is doing (with address-space randomisation and hash randomisation off).
Another installation (another path, other library builds) counts a little
differently: compare the ratios of one run, as with the timed figures.

A child interpreter serves ``count`` WSGI or ASGI requests of one
configuration, after a warm-up, under cachegrind; two children with
different counts give the instructions of one request as the difference
over the extra requests (start-up and warm-up cancel out).  Interpreted code
runs slower under valgrind, not differently.  An ASGI request hops to
asgiref's worker threads (Django sends its request signals there, and the
seed's sync middleware runs there), whose interleaving under valgrind moves
its count by a few thousand in two million: less than a tenth of what any
middleware adds.

``REQUEST_END`` stands for a configuration: its child calls, instead of
serving requests, the end of a request counted for the metrics
(``benchmarks.middleware.request_end``): what the metrics add to a request,
counted apart from the half-million instructions of the request around it,
whose count moves by a few thousand with the modules loaded.

    python -m benchmarks.instructions SERVER CONFIG METHOD COUNT   (the child)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Requests served before counting starts (both children), and the extra
#: requests of the second child.
WARM_UP, EXTRA = 300, 400
REQUEST_END = "request end"


def available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("setarch") is not None


def _instructions(server: str, config: str, method: str, count: int) -> int:
    """Instructions of a child serving ``count`` requests after the warm-up."""
    command = [
        "setarch", "-R",  # the same addresses in every run
        "valgrind", "--tool=cachegrind", "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable, "-m", "benchmarks.instructions", server, config, method,
        str(count),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind:\n{done.stderr}")
    return int(found.group(1).replace(",", ""))


def per_request(
    servers: list[str], configs: list[str], methods: list[str]
) -> dict[str, dict[str, int]]:
    """``{"SERVER METHOD": {config: instructions per request}}``; the
    ``REQUEST_END`` configuration (if asked) under WSGI only, as it serves no
    request."""
    rows = [
        (server, method, [c for c in configs if server == "WSGI" or c != REQUEST_END])
        for server in servers
        for method in methods
    ]
    jobs = [(s, c, m, n) for s, m, row in rows for c in row for n in (0, EXTRA)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counted = dict(
            zip(jobs, pool.map(lambda job: _instructions(*job), jobs), strict=True)
        )
    return {
        f"{s} {m}": {
            c: (counted[s, c, m, EXTRA] - counted[s, c, m, 0]) // EXTRA for c in row
        }
        for s, m, row in rows
    }


def _serve(server: str, config: str, method: str, count: int) -> None:
    import gc

    from benchmarks import middleware
    from benchmarks.common import configure
    from benchmarks.seed import install_seed

    install_seed()
    configure()
    if config == REQUEST_END:
        with middleware.request_end(method) as end:
            for _ in range(WARM_UP):
                end()
            gc.collect()
            gc.disable()
            for _ in range(count):
                end()
        return
    runner = middleware.Runner()
    try:
        runner.serve(server, config, method, WARM_UP)
        gc.collect()
        gc.disable()  # a collection would fall in one child's count only
        runner.serve(server, config, method, count)
    finally:
        runner.close()


def main(argv: list[str]) -> Any:
    server, config, method, count = argv
    _serve(server, config, method, int(count))


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
