"""The test tiers (tests/conftest.py's docstring): every test is in exactly one of unit, e2e, integration.

Checked on the files on disk, on the configuration in pyproject.toml, on the
collection hook with stand-in items, on the guard that keeps unit tests in
process (fed audit events, not real processes), and on the tests collected in
the very run that runs this one.
"""

from __future__ import annotations

import fnmatch
import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
TIERS = ("unit", "e2e", "integration")
PACKAGES = ("stream", "learners", "drift", "serving")


@pytest.fixture(scope="module")
def conftest(pytestconfig):
    """tests/conftest.py, the module pytest loaded (not a second import of it)."""
    (module,) = [
        plugin
        for plugin in pytestconfig.pluginmanager.get_plugins()
        if Path(getattr(plugin, "__file__", "") or "").resolve() == TESTS / "conftest.py"
    ]
    return module


class StandIn:
    """Just what the collection hook reads of a test item."""

    def __init__(
        self, relative: str, fixturenames: tuple[str, ...] = (), marks: tuple[str, ...] = ()
    ) -> None:
        self.path = ROOT / relative
        self.nodeid = f"{relative}::test_x"
        self.fixturenames = fixturenames
        self.markers: list[str] = list(marks)

    def add_marker(self, marker) -> None:
        self.markers.append(marker.name)

    def iter_markers(self):
        return (SimpleNamespace(name=name) for name in self.markers)  # the hook reads the names

    def get_closest_marker(self, name):
        return name if name in self.markers else None


def test_every_test_file_is_in_a_tier_directory(pytestconfig):
    patterns = pytestconfig.getini("python_files")
    files = [
        path.relative_to(TESTS)
        for path in TESTS.rglob("*.py")
        if "__pycache__" not in path.parts and any(fnmatch.fnmatch(path.name, p) for p in patterns)
    ]
    assert len(files) > 30  # the pattern found the suite
    assert [f for f in files if f.parts[0] not in TIERS or len(f.parts) < 2] == []
    assert {f.parts[0] for f in files} == set(TIERS)


def test_the_tiers_are_registered_and_a_plain_run_collects_tests_and_doctests(pytestconfig):
    registered = {line.split(":", 1)[0].strip() for line in pytestconfig.getini("markers")}
    assert set(TIERS) <= registered
    assert "--strict-markers" in pytestconfig.getini("addopts")  # a misspelt tier is an error
    # `pytest -m unit` with no paths runs the packages' doctests: they are in testpaths, collected once.
    testpaths = pytestconfig.getini("testpaths")
    assert "tests" in testpaths and set(PACKAGES) <= set(testpaths)
    assert len(testpaths) == len(set(testpaths))
    assert "--doctest-modules" in pytestconfig.getini("addopts")


def test_the_hook_marks_each_test_by_its_directory(conftest):
    items = [StandIn(f"tests/{tier}/sub/test_a.py") for tier in TIERS]
    items.append(StandIn("tests/integration/test_b.py", ("redis_url",)))
    items.append(StandIn("tests/e2e/test_c.py", marks=("e2e", "slow")))  # a module's pytestmark
    conftest.pytest_collection_modifyitems(None, items)
    assert [item.markers for item in items] == [
        ["unit"],
        ["e2e"],
        ["integration"],
        ["integration"],
        ["e2e", "slow", "e2e"],
    ]


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        (StandIn("tests/test_loose.py"), "not under tests/{unit,e2e,integration}/"),
        (StandIn("bench/test_odd.py"), "not under tests/{unit,e2e,integration}/"),
        (
            StandIn("tests/unit/test_c.py", ("kafka_bootstrap",)),
            "uses kafka_bootstrap; it belongs in tests/integration/",
        ),
        (StandIn("tests/e2e/test_d.py", ("redis_url",)), "uses redis_url; it belongs in tests/integration/"),
        (StandIn("tests/e2e/test_e.py", marks=("unit",)), "marked unit but in tests/e2e/"),
        (StandIn("tests/unit/test_f.py", marks=("unit", "e2e")), "marked e2e but in tests/unit/"),
    ],
)
def test_the_hook_refuses_a_test_outside_its_tier(conftest, item, complaint):
    placed = StandIn("tests/unit/test_fine.py")
    with pytest.raises(pytest.UsageError, match="tests outside their tier") as refused:
        conftest.pytest_collection_modifyitems(None, [placed, item])
    assert f"{item.nodeid}: {complaint}" in str(refused.value)
    assert placed.nodeid not in str(refused.value)


def test_the_e2e_doctests_exist_and_start_what_they_say(conftest):
    for name in conftest.E2E_DOCTESTS:
        module = importlib.import_module(name)
        assert ">>>" in (module.__doc__ or ""), name
    assert "EmbeddedBroker(" in importlib.import_module("stream.sources.embedded_broker").__doc__


def _drive(conftest, item, *events):
    """Run the unit guard around ``events`` (audit events raised, no process started).

    This test's own guard is paused meanwhile, so that it does not see the stand-in events.
    """
    watch = conftest._spawn_watch
    outer = watch.active, watch.started
    watch.active, watch.started = False, []
    try:
        guard = conftest._unit_runs_in_process(item)
        next(guard)
        for event in events:
            sys.audit(*event)
        with pytest.raises(StopIteration) as done:
            guard.send("result")
        return done.value.value
    finally:
        watch.active, watch.started = outer


def test_a_unit_test_that_starts_a_process_fails_and_names_it(conftest):
    unit, e2e = StandIn("tests/unit/test_u.py"), StandIn("tests/e2e/test_e.py")
    unit.add_marker(pytest.mark.unit)
    e2e.add_marker(pytest.mark.e2e)
    popen = ("subprocess.Popen", "/usr/bin/chromium", ["/usr/bin/chromium", "--headless"], None, None)
    with pytest.raises(pytest.fail.Exception, match=r"started subprocess\.Popen: /usr/bin/chromium: move it"):
        _drive(conftest, unit, popen)
    with pytest.raises(pytest.fail.Exception, match=r"os\.fork: \(a forked copy"):
        _drive(conftest, unit, ("os.fork",))
    # Libraries' machine probes are not processes a test starts; e2e tests may start anything.
    probe = ("subprocess.Popen", "/sbin/ldconfig", ["/sbin/ldconfig", "-p"], None, None)
    assert _drive(conftest, unit, probe) == "result"
    assert _drive(conftest, e2e, popen) == "result"


def test_every_test_in_this_run_has_exactly_one_tier(request):
    """Whatever was selected (``-m unit``, a whole run, one file): one tier each, the right one.

    A module may repeat its directory's marker (``pytestmark = pytest.mark.e2e``).
    """
    seen = set()
    for item in request.session.items:
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if isinstance(item, pytest.DoctestItem):
            expected = "e2e" if item.name == "stream.sources.embedded_broker" else "unit"
        else:
            expected = item.path.resolve().relative_to(TESTS).parts[0]
        assert tiers == {expected}, item.nodeid
        seen.add(expected)
    assert "unit" in seen
