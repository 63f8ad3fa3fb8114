"""The examples in the public docstrings run and give what they show."""

import doctest

import pytest

import cecore

PUBLIC = [getattr(cecore, name) for name in cecore.__all__ if callable(getattr(cecore, name))]


@pytest.mark.parametrize("function", PUBLIC, ids=lambda f: f.__name__)
def test_docstring_examples(function):
    tests = doctest.DocTestFinder().find(function, globs={})
    assert tests and any(t.examples for t in tests), f"{function.__name__} has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=lambda text: None)
    assert runner.failures == 0, f"{function.__name__}: {runner.failures} example(s) failed"
