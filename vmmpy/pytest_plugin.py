"""pytest plugin (registered as an entry point): the `machine` factory fixture.

    def test_boots(machine):
        m = machine("kernel.elf", ram="128M")
        m.serial.expect("login:", timeout=30)

Every machine made through the fixture is stopped and freed after the test, and
a failing test gets each machine's serial transcript attached to its report.
"""

from __future__ import annotations

import pytest

from vmmpy.machine import Machine

_KEY = pytest.StashKey[list]()


@pytest.fixture
def machine(request):
    made: list[Machine] = []
    request.node.stash[_KEY] = made

    def factory(*args, **kwargs) -> Machine:
        m = Machine(*args, **kwargs)
        made.append(m)
        return m

    yield factory
    for m in made:
        m.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for i, m in enumerate(item.stash.get(_KEY, [])):
        try:
            text = m.serial.text if m._vm is not None else ""
        except Exception as e:  # the VM may be gone; say so rather than hide the failure
            text = f"<serial unavailable: {e}>"
        report.sections.append((f"vmmpy serial: machine {i} ({m.name})", text[-20000:] or "<no output>"))
