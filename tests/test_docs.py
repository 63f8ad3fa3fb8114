"""The examples in the public docstrings run and give what they show."""

import doctest

import pytest

import cecore

PUBLIC = [getattr(cecore, name) for name in cecore.__all__ if callable(getattr(cecore, name))]


def _optional_module(module):
    """cecore.<module> (torch, dask) as a parameter, skipped without its extra."""
    name = f"cecore.{module}"
    try:
        return pytest.param(__import__(name, fromlist=["__all__"]), id=name)
    except ImportError:
        return pytest.param(None, id=name, marks=pytest.mark.skip(reason=f"no {module}"))


@pytest.mark.parametrize("function", PUBLIC, ids=lambda f: f.__name__)
def test_docstring_examples(function):
    _run_examples(function)


@pytest.mark.parametrize("module", [_optional_module("torch"), _optional_module("dask")])
def test_extra_module_examples(module):
    # the module docstring and those of its public functions and classes
    _run_examples(module)


def _run_examples(function):
    tests = doctest.DocTestFinder().find(function, globs={})
    assert tests and any(t.examples for t in tests), f"{function.__name__} has no example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=lambda text: None)
    assert runner.failures == 0, f"{function.__name__}: {runner.failures} example(s) failed"
