"""The client's TypeScript declarations compile under ``tsc --strict`` as an app uses them.

TypeScript and Vue's types come from the npm registry, installed by ``.ci/run``
into ``tests/.node``; without them this test skips.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
NODE = TESTS / ".node" / "node_modules"
TSC = NODE / "typescript" / "bin" / "tsc"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (TSC.is_file() and (NODE / "vue" / "package.json").is_file()),
    reason="needs typescript and vue in tests/.node: npm install --no-save --prefix "
           "tests/.node vue@3 typescript@5 (.ci/run does)")]


def test_declarations_compile(tmp_path: Path) -> None:
    config = {
        "compilerOptions": {
            "strict": True, "noEmit": True, "target": "es2022", "lib": ["es2022", "dom"],
            "module": "nodenext", "moduleResolution": "nodenext", "skipLibCheck": False,
            "types": [], "paths": {"vue": [str(NODE / "vue")]},
        },
        "files": [str(TESTS / "client_types.ts")],
    }
    tsconfig = tmp_path / "tsconfig.json"
    tsconfig.write_text(json.dumps(config))
    proc = subprocess.run(["node", str(TSC), "-p", str(tsconfig)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
