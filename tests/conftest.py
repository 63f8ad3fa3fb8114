"""Shared fixtures for cecore's tests.

The float64 reference implementations live in tests/_reference.py; with
``--import-mode=importlib`` test modules cannot import each other, so this
directory is put on sys.path and the module is also exposed as the ``ref``
fixture.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _reference

try:
    from hypothesis import settings
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass
else:
    # no example database: the suite must not write into the source tree
    settings.register_profile("cecore", database=None, deadline=None, print_blob=True)
    settings.load_profile("cecore")


@pytest.fixture
def ref():
    """The float64 NumPy reference implementations (tests/_reference.py)."""
    return _reference


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, different per test."""
    seed = sum(ord(c) * (i + 1) for i, c in enumerate(request.node.nodeid)) % 2**32
    return np.random.default_rng(seed)
