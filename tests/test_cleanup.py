"""run_all: the clean-up steps after a failing one still run, and the first error comes out."""
from __future__ import annotations

import pytest

from harness.cleanup import run_all


def test_every_step_runs_and_the_first_error_is_raised_after_them():
    ran = []

    def interrupted():
        ran.append("interrupted")
        raise KeyboardInterrupt("first")

    def failing():
        ran.append("failing")
        raise OSError("second")

    with pytest.raises(KeyboardInterrupt, match="first"):
        run_all(lambda: ran.append(1), interrupted, failing, lambda: ran.append(4))
    assert ran == [1, "interrupted", "failing", 4]


def test_no_error_no_exception():
    ran = []
    run_all(lambda: ran.append("a"), lambda: ran.append("b"))
    assert ran == ["a", "b"]
