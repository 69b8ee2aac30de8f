"""Load django-multidb-router 0.11 (the seed) beside ``multidb`` as ``multidb_seed``.

The seed's wheel is downloaded at run time into a cache outside the
repository; none of its code is committed.  Its modules import each other
relatively, so they load unchanged under another package name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

SEED = "django-multidb-router==0.11"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / (
    "django-replica-router/seed-0.11"
)


def install_seed() -> Path:
    """Unpack the seed as ``CACHE/multidb_seed`` and put CACHE on sys.path."""
    package = CACHE / "multidb_seed"
    if not (package / "__init__.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        download = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--dest",
                str(CACHE),
                SEED,
            ],
            capture_output=True,
            text=True,
        )
        if download.returncode:
            sys.exit(f"Could not download {SEED}:\n{download.stderr}")
        wheel = next(CACHE.glob("django_multidb_router-0.11-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("multidb/") and name.endswith(".py"):
                    target = package / name.removeprefix("multidb/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(name))
    if str(CACHE) not in sys.path:
        sys.path.insert(0, str(CACHE))
    return package
