"""The installed distribution: where it is imported from, its metadata, its
type information (py.typed, stubs checked by mypy) and show_config()."""

import importlib.machinery
import importlib.metadata
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import cecore

PACKAGE = Path(cecore.__file__).resolve().parent
HERE = Path(__file__).resolve().parent
PUBLIC_MODULES = ["_config", "_divergence", "_linear", "_losses", "_softmax"]


def _metadata():
    try:
        return importlib.metadata.metadata("cecore")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        pytest.skip("cecore is not installed as a distribution")


def test_imported_from_the_expected_install():
    # .ci/check_packaging.sh sets this to the site-packages of the venv it tests.
    expected = os.environ.get("CECORE_EXPECT_SITE_PACKAGES")
    if not expected:
        pytest.skip("CECORE_EXPECT_SITE_PACKAGES not set")
    assert PACKAGE.is_relative_to(Path(expected).resolve()), PACKAGE


def test_distribution_metadata():
    md = _metadata()
    assert md["Name"] == "cecore"
    assert md["Version"] == cecore.__version__
    assert tuple(map(int, md["Metadata-Version"].split("."))) >= (2, 4)
    assert md["Summary"] and md["Description-Content-Type"] == "text/markdown"
    assert "## Install" in md["Description"]
    assert md["License-Expression"] == "BSD-3-Clause"
    assert md.get_all("License-File") == ["LICENSE"]
    assert md["Requires-Python"] == ">=3.10"
    classifiers = md.get_all("Classifier")
    assert "Typing :: Typed" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression
    for minor in range(10, 14):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    urls = dict(u.split(", ", 1) for u in md.get_all("Project-URL"))
    assert {"Homepage", "Source", "Issues", "Documentation"} <= urls.keys()
    assert all(u.startswith("https://") for u in urls.values())
    assert {"test", "torch", "dask"} <= set(md.get_all("Provides-Extra"))
    requires = md.get_all("Requires-Dist")
    assert any(re.fullmatch(r"numpy>=\S+", r) for r in requires), requires
    for extra, package in [("test", "pytest"), ("test", "threadpoolctl"), ("torch", "torch"),
                           ("dask", "dask")]:
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in requires)
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="cecore")
    assert script.value == "cecore.__main__:main"
    files = {f.name for f in importlib.metadata.files("cecore")}
    assert {"LICENSE", "py.typed"} <= files


def test_type_information_is_installed():
    assert (PACKAGE / "py.typed").is_file()
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled = [p.name.split(".")[0] for p in PACKAGE.iterdir() if p.name.endswith(suffixes)]
    assert compiled
    missing = [m for m in compiled + PUBLIC_MODULES if not (PACKAGE / f"{m}.pyi").is_file()]
    assert not missing, f"no stub for {missing} in {PACKAGE}"


def test_typing_example_runs(capsys):
    runpy.run_path(str(HERE / "typing_example.py"), run_name="__main__")
    assert "perplexity" in capsys.readouterr().out


MISUSE = """\
import numpy as np
import cecore

x = np.zeros((2, 3))
cecore.cross_entropy(x, [0, 1], reduction="avg")
text: str = cecore.softmax(x)
"""


def _mypy(args, cwd):
    pytest.importorskip("mypy", reason="mypy is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYPY")}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False)


def test_mypy_strict_accepts_typed_use_and_rejects_misuse(tmp_path):
    # Against the installed package (py.typed + stubs), not a source tree:
    # mypy runs in an empty directory and gets no search path of its own.
    _metadata()  # an in-place build is not on mypy's search path
    (tmp_path / "misuse.py").write_text(MISUSE)
    example = HERE / "typing_example.py"
    run = _mypy(["mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), str(example),
                 "misuse.py"], tmp_path)
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert not [e for e in errors if not e.startswith("misuse.py:")], run.stdout + run.stderr
    # the stubs are in force: a bad reduction and a wrong result type are caught
    assert [e.split(":")[1] for e in errors] == ["5", "6"], run.stdout + run.stderr


def test_stubs_match_the_runtime(tmp_path):
    # only the modules with a stub: others (e.g. optional integrations) may not import here
    stubbed = sorted(f"cecore.{p.stem}" for p in PACKAGE.glob("*.pyi"))
    run = _mypy(["mypy.stubtest", *stubbed, "--allowlist", str(HERE / "stubtest_allowlist.txt"),
                 "--ignore-unused-allowlist",  # which Cython attributes exist varies by version
                 "--mypy-config-file", os.devnull], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
