"""The documentation's shell commands: every ```sh block parses, and the quick
start installs and runs from a fresh ``git clone`` of the repository.

The quick start block is the first ```sh block under the README's heading
that contains "Quick start". Its lines up to the one that sets up
(``.ci/setup``, or the last ``pip install``) run as written, in a clone in a
temporary folder (so a file the package needs but git does not hold is caught);
``PIP_NO_DEPS=1`` keeps pip from downloading the
dependencies again, which the clone's venv then borrows from the venv running
the tests. Serving and the test suite are not run (they do not end by
themselves): every ``sse-service`` command the block names must exist, and
``install-sql`` (with nothing but ``SSE_DATABASE_URL``) and ``check`` must
pass against a database of the test's own.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from sse_service import scratchdb
from tests.harness import JWT_KEY, service_env

ROOT = Path(__file__).resolve().parent.parent
SHELLS = ("sh", "bash", "shell")
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
_HEADING = re.compile(r"^#+\s+(.*)$", re.M)


def documents() -> list[Path]:
    """README.md and every docs/*.md."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_blocks(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line number, nearest heading above, text) of every shell-labelled block."""
    text = path.read_text(encoding="utf-8")
    for match in _FENCE.finditer(text):
        if match.group(1) in SHELLS:
            headings = _HEADING.findall(text, 0, match.start())
            yield (text.count("\n", 0, match.start()) + 1, headings[-1] if headings else "",
                   match.group(2))


BLOCKS = [pytest.param(block, id=f"{path.relative_to(ROOT)}:{line}")
          for path in documents() for line, _heading, block in shell_blocks(path)]


@pytest.mark.parametrize("block", BLOCKS)
def test_shell_block_parses(block: str) -> None:
    result = subprocess.run(["bash", "-n"], input=block, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, f"{result.stderr}\n--- the block:\n{block}"


def quick_start() -> str:
    for _line, heading, block in shell_blocks(ROOT / "README.md"):
        if "quick start" in heading.lower():
            return block
    raise AssertionError("README.md has no ```sh block under a 'Quick start' heading")


def install_part(block: str) -> str:
    """The block's lines up to and including the last one that sets up: ``.ci/setup``
    or ``pip install``."""
    lines = block.splitlines()
    last = max((i for i, line in enumerate(lines)
                if "pip install" in line or ".ci/setup" in line), default=None)
    assert last is not None, "the quick start does not install the package"
    return "\n".join(lines[:last + 1]) + "\n"


def test_the_quick_start_installs_with_pip_and_names_commands() -> None:
    block = quick_start()
    setup = install_part(block)
    if ".ci/setup" in setup:  # the set-up script does it
        setup = (ROOT / ".ci" / "setup").read_text(encoding="utf-8")
    assert "python3 -m venv .venv" in setup and "pip install -q -e '.[test]'" in setup
    assert re.search(r"sse-service\s+[a-z]", block), "the quick start runs no sse-service command"


@pytest.fixture
def empty_database(pg_admin_dsn: str) -> Iterator[str]:
    """A database with the core schema and nothing of ours."""
    dsn = asyncio.run(scratchdb.create_database(pg_admin_dsn, install=False, prefix="sse_test_"))
    try:
        yield dsn
    finally:
        asyncio.run(scratchdb.drop_database(pg_admin_dsn, dsn))


@pytest.mark.slow
def test_quick_start_in_a_fresh_clone(tmp_path: Path, empty_database: str) -> None:
    clone = tmp_path / "sse-service"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120,
                   capture_output=True)
    env = service_env({"PIP_NO_DEPS": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    env.pop("VIRTUAL_ENV", None)
    block = quick_start()
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", install_part(block)], cwd=clone,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    # The dependencies that PIP_NO_DEPS left out: those of the venv running the tests.
    venv_python = clone / ".venv" / "bin" / "python"
    purelib = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(purelib, "zz_test_dependencies.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")

    def run(*args: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(clone / ".venv" / "bin" / "sse-service"), *args], cwd=tmp_path,
                              env=service_env(settings), capture_output=True, text=True,
                              timeout=120)

    where = subprocess.run([str(venv_python), "-c", "import sse_service, sse_service.sqlinstall "
                            "as s; print(sse_service.__file__); print(s.INSTALL_SQL)"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    assert all(Path(p).is_relative_to(clone) for p in where.stdout.split()), where.stdout
    assert run("--help").returncode == 0
    for command in sorted(set(re.findall(r"sse-service\s+([a-z][a-z-]*)", block))):
        result = run(command, "--help")
        assert result.returncode == 0, f"sse-service {command}: {result.stderr}"

    result = run("install-sql", SSE_DATABASE_URL=empty_database)  # issue 10: no JWT key
    assert result.returncode == 0, result.stderr
    result = run("check", SSE_DATABASE_URL=empty_database, SSE_JWT_KEY=JWT_KEY)
    assert result.returncode == 0, result.stdout + result.stderr

