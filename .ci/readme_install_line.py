"""Print the install part of the README's first command, exactly as the README writes it.

The README's first code block starts with the main-job line,
``<install commands> && streamlearn demo  # comment``. CI runs the install
part verbatim in a fresh virtualenv (.ci/newcomer.sh), so the README cannot
drift from what is proven; this script refuses a README whose first line has
another shape rather than guessing.

    python3 .ci/readme_install_line.py README.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MAIN_JOB = "streamlearn demo"


def install_line(readme: str) -> str:
    """The part of the first code block's first line before ``&& streamlearn demo``.

    >>> install_line("# x\\n```bash\\npip install -e . && streamlearn demo   # go\\nbash t.sh\\n```\\n")
    'pip install -e .'
    """
    block = re.search(r"^```(?:bash|sh|console)?\n(.*?)^```", readme, re.S | re.M)
    if block is None:
        raise SystemExit("README.md has no code block: its first block must hold the main-job command")
    first = block.group(1).splitlines()[0]
    command = re.sub(r"\s+#.*$", "", first).strip()
    install, sep, tail = command.rpartition(" && ")
    if not sep or tail.strip() != MAIN_JOB or not install.strip():
        raise SystemExit(
            f"README.md's first command must be '<install> && {MAIN_JOB}', found: {first!r}"
        )
    return install.strip()


if __name__ == "__main__":
    print(install_line(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md").read_text()))
