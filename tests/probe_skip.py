"""Run only by tests/test_isolation.py: a check that cannot run on this machine."""

from tests.skips import skip_loudly


def test_needs_something_missing():
    skip_loudly("the widget (probe)", "install the widget")
