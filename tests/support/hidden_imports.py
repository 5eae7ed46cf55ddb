"""Running code in a fresh interpreter where some packages are missing, as on a worker without an extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Sequence

from tests.support.paths import REPO_ROOT


def run_without(
    modules: Sequence[str], body: str, *args: str, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """`body` (dedented) in a new Python whose imports of `modules` fail, as if they were not installed."""
    hide = "".join(f"sys.modules[{name!r}] = None\n" for name in modules)
    code = "import sys\n" + hide + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
