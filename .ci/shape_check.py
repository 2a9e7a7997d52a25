"""The shape rules of issue 17, checked in CI: every module of the packages is under
``MAX_LINES`` lines, and no function takes more than ``MAX_PARAMS`` parameters.

Parameters are counted as a caller sees them: positional and keyword-only ones,
not ``self``/``cls`` and not ``*args``/``**kwargs``. Each offender is printed as
``path:line: message``; the exit status is 1 if any offender is not on
``ALLOWED``, 0 otherwise (allowed ones are reported as such, and an allow-list
entry that no longer offends is reported too, so the list only shrinks).

    python .ci/shape_check.py            # from the repository root

Examples
--------
>>> import ast
>>> tree = ast.parse("class A:\\n    def f(self, a, b=1, *args, c, **kw): pass")
>>> [(name, count) for name, _, count in functions(tree)]
[('A.f', 3)]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("stream", "learners", "drift", "serving")
MAX_LINES = 600
MAX_PARAMS = 10

# Deliberate exceptions, each with its reason; a new offender fails the check. An entry
# that no longer offends is reported, so the list only shrinks.
ALLOWED = {
    # Estimator constructors: each hyperparameter is a keyword, as in scikit-learn and river,
    # because get_params()/clone() and the state's config() mirror them one to one and the
    # state-compatibility check names the differing one ("optimizer: state has ...").
    "learners/neural/learner.py:TorchLearner.__init__",
    "learners/avalanche_adapter/learner.py:AvalancheLearner.__init__",
}


def functions(tree: ast.AST):
    """``(qualified name, line, parameter count)`` of every function in ``tree``."""

    def walk(node: ast.AST, prefix: str):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                # self/cls only as the first parameter of a method (a nested def has none).
                if prefix and names and names[0] in ("self", "cls") and not prefix.endswith(">"):
                    names = names[1:]
                yield f"{prefix}{child.name}", child.lineno, len(names)
                yield from walk(child, f"{prefix}{child.name}.<locals>>")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    for name, line, count in walk(tree, ""):
        yield name.replace(".<locals>>", ".<locals>."), line, count


def offenders(root: Path):
    """``(allow-list key, "path:line", message)`` for every module and function over the limits."""
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            text = path.read_text(encoding="utf-8")
            n_lines = len(text.splitlines())
            if n_lines > MAX_LINES:
                yield rel, f"{rel}:1", f"{n_lines} lines (limit {MAX_LINES}): split the module"
            for name, line, count in functions(ast.parse(text, filename=rel)):
                if count > MAX_PARAMS:
                    yield (
                        f"{rel}:{name}",
                        f"{rel}:{line}",
                        f"{name} takes {count} parameters (limit {MAX_PARAMS}): group them in a config",
                    )


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    found = list(offenders(root))
    failed = False
    for key, where, message in found:
        allowed = key in ALLOWED
        failed |= not allowed
        print(f"{where}: {message}{' (a deliberate exception, see ALLOWED)' if allowed else ''}")
    for key in sorted(ALLOWED - {key for key, _, _ in found}):
        print(f".ci/shape_check.py: {key!r} is on ALLOWED but no longer offends: remove it")
    if failed:
        print(
            f"shape check failed: see docs/layout.md (modules <= {MAX_LINES} lines, <= {MAX_PARAMS} parameters)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
