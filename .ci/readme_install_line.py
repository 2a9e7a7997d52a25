"""Print the install part of the README's first command, exactly as the README writes it.

The README's first shell code block starts with the main-job line,
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
    """The part of the first shell block's first line before ``&& streamlearn demo``.

    >>> install_line("```text\\na -> b\\n```\\n```bash\\npip install -e . && streamlearn demo   # go\\n```\\n")
    'pip install -e .'
    """
    # Pair fences in order, so a diagram block before the commands is skipped whole.
    blocks = re.findall(r"^(```|~~~)([\w-]*)\n(.*?)^\1[ \t]*$", readme, re.S | re.M)
    shell = [body for _, lang, body in blocks if lang in {"bash", "sh", "console", "shell"}]
    if not shell or not shell[0].strip():
        raise SystemExit("README.md has no ```bash block: its first one must hold the main-job command")
    first = shell[0].splitlines()[0]
    command = re.sub(r"\s+#.*$", "", first).strip()
    install, sep, tail = command.rpartition(" && ")
    if not sep or tail.strip() != MAIN_JOB or not install.strip():
        raise SystemExit(f"README.md's first command must be '<install> && {MAIN_JOB}', found: {first!r}")
    return install.strip()


if __name__ == "__main__":
    print(install_line(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md").read_text()))
