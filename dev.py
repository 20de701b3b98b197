#!/usr/bin/env python3
"""Developer bootstrap: the only thing a fresh clone needs is python3 (>= 3.11).

    python3 dev.py demo      compile and run the bundled example end to end (examples/demo.py)
    python3 dev.py test      run the test suite (python -m pytest -q tests [extra pytest args])

Both create ``.venv`` in the repository root when it is missing, install cimc into it in
editable mode with its test extras (``pip install -e ".[test]"``) when the installed state is
stale, and then run the real work with the virtual environment's python. "Stale" means the
stamp file ``.venv/.cimc-dev-stamp`` does not match a hash of ``pyproject.toml`` (and of this
bootstrap's install recipe), so editing the dependencies triggers a reinstall and nothing else
does. ``python3 dev.py setup`` only prepares the environment.

Standard library only: this file runs before any dependency exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".cimc-dev-stamp"
#: Bump when the install command below changes, so existing environments get reinstalled.
RECIPE = "pip install -e .[test] v1"
MIN_PYTHON = (3, 11)
#: pytest's exit status when it collected no tests: an empty suite is a failure here.
PYTEST_NO_TESTS = 5

USAGE = """usage: python3 dev.py COMMAND [ARGS...]

commands:
  demo     compile and run the bundled example model end to end (examples/demo.py)
  test     run the test suite: python -m pytest -q tests [ARGS...]
  setup    only create or refresh the virtual environment (.venv)
"""


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def fail(message: str, status: int = 1) -> NoReturn:
    print(f"dev.py: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def venv_python() -> Path:
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def venv_bin() -> Path:
    return venv_python().parent


def wanted_stamp() -> str:
    h = hashlib.sha256()
    h.update(RECIPE.encode())
    h.update(b"\0")
    h.update((ROOT / "pyproject.toml").read_bytes())
    return h.hexdigest()


def create_venv() -> None:
    say("creating virtual environment in .venv ...")
    try:
        venv.EnvBuilder(with_pip=True, clear=VENV.exists()).create(VENV)
    except (subprocess.CalledProcessError, OSError) as exc:
        shutil.rmtree(VENV, ignore_errors=True)     # a half-made environment would only confuse the next run
        fail(f"could not create the virtual environment ({exc}).\n"
             f"On Debian/Ubuntu install the venv module first: sudo apt-get install python3-venv")


def venv_is_usable() -> bool:
    py = venv_python()
    if not py.exists():
        return False
    probe = subprocess.run([str(py), "-c", "import sys, pip; sys.exit(sys.version_info < (3, 11))"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def ensure_environment() -> Path:
    if sys.version_info < MIN_PYTHON:
        fail(f"cimc needs Python {'.'.join(map(str, MIN_PYTHON))} or newer; this is {sys.version.split()[0]}")
    if not venv_is_usable():
        if VENV.exists():
            say(".venv exists but has no working python >= 3.11 with pip; recreating it")
        create_venv()
    stamp = wanted_stamp()
    current = STAMP.read_text().strip() if STAMP.is_file() else None
    if current != stamp or not (venv_bin() / ("cimc.exe" if os.name == "nt" else "cimc")).exists():
        say("installing cimc and its dependencies (pip install -e \".[test]\"; the first time takes a "
            "minute or two) ...")
        STAMP.unlink(missing_ok=True)
        pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q",
               "-e", ".[test]"]
        status = subprocess.run(pip, cwd=ROOT).returncode
        if status != 0:
            fail(f"pip install failed (exit status {status}); the environment is left as is and "
                 f"the next run retries the install", status)
        tmp = STAMP.with_suffix(".tmp")
        tmp.write_text(stamp + "\n")
        os.replace(tmp, STAMP)
        say("environment ready")
    return venv_python()


def run(argv: list[str]) -> int:
    """Run ``argv`` with the virtual environment active (its bin first on PATH), from the repo root."""
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = str(venv_bin()) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONHOME", None)
    try:
        return subprocess.run(argv, cwd=ROOT, env=env).returncode
    except KeyboardInterrupt:
        return 130


def main(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command, extra = args[0], args[1:]
    if command not in ("demo", "test", "setup"):
        print(USAGE, end="", file=sys.stderr)
        fail(f"unknown command {command!r}", 2)
    python = ensure_environment()
    if command == "setup":
        return 0
    if command == "demo":
        return run([str(python), str(ROOT / "examples" / "demo.py"), *extra])
    status = run([str(python), "-m", "pytest", "-q", "tests", *extra])
    if status == PYTEST_NO_TESTS:
        print("dev.py: error: pytest collected no tests; an empty test run counts as a failure",
              file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
