"""pytest fixtures of the API tests; the helpers live in palisade_api.py
(a unique module name, so other test folders' conftest files cannot clash).

The PostgreSQL pass (PALISADE_STORE set) of a run that requires PostgreSQL
(PALISADE_REQUIRE lists `postgres` or is `all`, as .ci/run sets) turns every
skip into a failure: the tests skipped in the SQLite pass for want of
PostgreSQL must all run there."""

import os

import pytest

from palisade_api import PG_BASE, admin, fresh, server  # noqa: F401  (fixtures)


def _required(need):
    names = [n.strip() for n in os.environ.get("PALISADE_REQUIRE", "").split(",")]
    return need in names or "all" in names


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and PG_BASE and _required("postgres"):
        report.outcome = "failed"
        report.longrepr = f"skipped in the PostgreSQL pass of a run that requires it (PALISADE_REQUIRE): {report.longrepr}"
