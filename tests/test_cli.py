"""The ``cecore eval`` command: .npy files, memory-mapped, in batches of rows."""

import io
import json
import math
import os
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from _helpers import assert_metrics_equal, evaluator_result

import cecore
from cecore.__main__ import evaluate_files, main


def save(tmp_path, **arrays):
    """Save each array to tmp_path/<name>.npy; returns the paths as strings."""
    paths = []
    for name, array in arrays.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        paths.append(str(path))
    return paths


def make_data(rng, n=1000, k=50, dtype=np.float32):
    logits = (rng.standard_normal((n, k)) * 2).astype(dtype)
    target = rng.integers(0, k, n)
    logits[np.arange(n), target] += dtype(3)
    target[rng.random(n) < 0.05] = -100
    return logits, target


def run_json(capsys, *argv):
    assert main(["eval", *argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


@pytest.mark.parametrize("batch_rows", [None, 1, 64, 999, 5000])
def test_json_matches_the_evaluator_in_memory(tmp_path, capsys, rng, batch_rows):
    logits, target = make_data(rng)
    paths = save(tmp_path, logits=logits, targets=target)
    extra = [] if batch_rows is None else ["--batch-rows", str(batch_rows)]
    got = run_json(capsys, *paths, "--topk", "1,5", *extra)
    assert_metrics_equal(got, evaluator_result(logits, target, topk=(1, 5)), rtol=1e-12,
                         other_keys=True)
    assert got["positions"] == 1000
    assert got["logits_shape"] == [1000, 50] and got["logits_dtype"] == "float32"
    assert got["targets_dtype"] == "int64"
    assert got["seconds"] > 0 and got["gb_per_s"] > 0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, ">f4"])
@pytest.mark.parametrize("target_dtype", [np.int8, np.uint16, np.int32, np.int64])
def test_dtypes(tmp_path, capsys, rng, dtype, target_dtype):
    logits, target = make_data(rng, n=200, k=20)
    logits = logits.astype(dtype)
    target = np.where(target < 0, 19, target).astype(target_dtype)
    paths = save(tmp_path, logits=logits, targets=target)
    got = run_json(capsys, *paths, "--batch-rows", "30")
    assert_metrics_equal(got, evaluator_result(logits, target), rtol=1e-12, other_keys=True)


def test_options(tmp_path, capsys, rng):
    logits, target = make_data(rng, k=30)
    target[target == -100] = 3
    paths = save(tmp_path, logits=logits, targets=target)
    got = run_json(capsys, *paths, "--ignore-index", "3", "--label-smoothing", "0.2",
                   "--topk", "5,1,2", "--threads", "2", "--batch-rows", "100")
    want = evaluator_result(logits, target, ignore_index=3, label_smoothing=0.2, topk=(1, 2, 5))
    assert_metrics_equal(got, want, rtol=1e-12, other_keys=True)
    assert list(got)[-8:] == ["perplexity", "accuracy@1", "accuracy@2", "accuracy@5", "entropy",
                              "brier", "ece", "count"]


def test_thread_count_does_not_change_the_result(tmp_path, capsys, rng):
    paths = save(tmp_path, **dict(zip(("logits", "targets"), make_data(rng, n=4000, k=40),
                                      strict=True)))
    results = [run_json(capsys, *paths, "--threads", n, "--topk", "1,3") for n in ("1", "2")]
    for key in ("loss", "bits", "perplexity", "accuracy@1", "accuracy@3", "count"):
        assert results[0][key] == results[1][key]


@pytest.mark.parametrize("axis", [0, 1])
def test_class_axis_other_than_last(tmp_path, capsys, rng, axis):
    logits, target = make_data(rng, n=600, k=12, dtype=np.float64)
    if axis == 0:
        stored, stored_target = np.ascontiguousarray(logits.T), target  # (K, N)
    else:  # (N, K, d) as in PyTorch's K-dimensional case
        stored = np.ascontiguousarray(logits.reshape(200, 3, 12).transpose(0, 2, 1))
        stored_target = target.reshape(200, 3)
    paths = save(tmp_path, logits=stored, targets=stored_target)
    got = run_json(capsys, *paths, "--axis", str(axis), "--batch-rows", "7")
    assert_metrics_equal(got, evaluator_result(logits, target), rtol=1e-12, other_keys=True)


def test_single_row(tmp_path, capsys):
    paths = save(tmp_path, logits=np.array([1.0, 2.0, 3.0]), targets=np.array(2))
    got = run_json(capsys, *paths)
    assert got["loss"] == pytest.approx(float(cecore.cross_entropy(np.array([1.0, 2.0, 3.0]),
                                                                   np.array(2))), rel=1e-15)
    assert got["accuracy@1"] == 1.0 and got["count"] == 1


def test_table(tmp_path, capsys, rng):
    logits, target = make_data(rng)
    paths = save(tmp_path, logits=logits, targets=target)
    assert main(["eval", *paths, "--topk", "1,5"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    names = [line.split()[0] for line in captured.out.splitlines()]
    assert names == ["logits", "targets", "loss", "bits", "perplexity", "accuracy@1",
                     "accuracy@5", "count", "throughput"]
    result = evaluator_result(logits, target, topk=(1, 5))
    assert f"{result['loss']:.6f} nats" in captured.out
    assert f"{result['count']:,} of 1,000 positions" in captured.out
    assert "GB/s" in captured.out


def test_non_finite_values_are_json_null(tmp_path, capsys):
    paths = save(tmp_path, logits=np.zeros((4, 3), dtype=np.float32), targets=np.full(4, -100))
    got = run_json(capsys, *paths)
    assert got["loss"] is None and got["perplexity"] is None and got["accuracy@1"] is None
    assert got["count"] == 0


def test_files_are_memory_mapped_and_read_in_batches(tmp_path, rng):
    logits = rng.standard_normal((4000, 500)).astype(np.float32)  # 8 MB
    paths = save(tmp_path, logits=logits, targets=rng.integers(0, 500, 4000))
    tracemalloc.start()
    try:
        metrics, _ = evaluate_files(*paths, batch_rows=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert metrics["count"] == 4000
    assert peak < logits.nbytes / 20  # NumPy allocations: nothing of the logits' size


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal(tmp_path, rng):
    paths = save(tmp_path, **dict(zip(("logits", "targets"), make_data(rng), strict=True)))
    terminal = FakeTerminal()
    evaluate_files(*paths, batch_rows=100, progress=terminal)
    text = terminal.getvalue()
    assert "1,000/1,000 rows" in text and "100.0%" in text
    assert "GB/s" in text and "ETA" in text
    assert text.endswith("\r\033[K")  # the bar is erased at the end
    pipe = io.StringIO()
    evaluate_files(*paths, batch_rows=100, progress=pipe)
    assert pipe.getvalue() == ""
    evaluate_files(*paths, batch_rows=100, progress=False)  # no stream at all


def test_progress_goes_to_the_current_stderr(tmp_path, rng, monkeypatch):
    paths = save(tmp_path, **dict(zip(("logits", "targets"), make_data(rng), strict=True)))
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["eval", *paths, "--json", "--batch-rows", "500"]) == 0
    assert "1,000/1,000 rows" in terminal.getvalue()


def run_cli(*argv, cwd):
    """``python -m cecore ARGV`` in a subprocess importing the cecore under test."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cecore.__file__)))
    return subprocess.run([sys.executable, "-m", "cecore", *argv], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


def test_demo(tmp_path):
    done = run_cli("eval", "--demo", "--topk", "1,5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    assert "accuracy@5" in done.stdout
    assert "removed afterwards" in done.stdout
    done = run_cli("eval", "--demo", "--json", cwd=tmp_path)
    result = json.loads(done.stdout)
    assert result["count"] > 0 and 0 < result["accuracy@1"] < 1
    assert math.isfinite(result["loss"])
    assert not os.path.exists(result["logits"])  # the temporary directory is gone


def check_error(capsys, argv, message, code=1):
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err
    assert message in lines[-1], lines
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("cecore eval: error: ")


def test_input_errors(tmp_path, capsys, rng):
    logits, target = make_data(rng, n=300, k=10)
    good, good_t = save(tmp_path, logits=logits, targets=target)
    ints, floats, short, wide = save(
        tmp_path, ints=np.zeros((300, 10), dtype=np.int32), floats=target.astype(np.float32),
        short=target[:299], wide=np.zeros((300, 10), dtype=complex),
    )
    missing = str(tmp_path / "missing.npy")
    text = tmp_path / "text.npy"
    text.write_text("not numpy")
    archive = tmp_path / "archive.npz"
    np.savez(archive, logits=logits)
    cases = [
        ([missing, good_t], f"cannot read LOGITS {missing}: No such file or directory"),
        ([good, missing], f"cannot read TARGETS {missing}"),
        ([str(tmp_path), good_t], "cannot read LOGITS"),
        ([str(text), good_t], "is not a .npy file"),
        ([str(archive), good_t], "is a .npz archive"),
        ([ints, good_t], "has dtype int32; expected float16, float32 or float64"),
        ([wide, good_t], "has dtype complex128"),
        ([good, floats], "has dtype float32; expected integers"),
        ([good, short], "has shape (299,), expected (300,)"),
        ([good, good_t, "--axis", "2"], "axis 2 is out of range"),
        ([good, good_t, "--label-smoothing", "2"], "label_smoothing must be in [0, 1]"),
    ]
    for argv, message in cases:
        check_error(capsys, ["eval", *argv], message)


def test_target_out_of_range_is_named_by_its_index_in_the_file(tmp_path, capsys, rng):
    logits, target = make_data(rng, n=1000, k=10)
    target[777] = 10
    paths = save(tmp_path, logits=logits, targets=target)
    check_error(capsys, ["eval", *paths, "--batch-rows", "100"],
                "target[777] = 10 is out of range: class indices must be in [0, 10)")
    target_3d = np.where(target < 0, 0, target).reshape(100, 10)
    target_3d[54, 3] = -5
    paths = save(tmp_path, logits=logits.reshape(100, 10, 10).transpose(0, 2, 1),
                 targets=target_3d)
    check_error(capsys, ["eval", *paths, "--axis", "1", "--batch-rows", "7"],
                "target[54, 3] = -5 is out of range")


def test_usage_errors(tmp_path, capsys, rng):
    paths = save(tmp_path, **dict(zip(("logits", "targets"), make_data(rng, n=10), strict=True)))
    for argv, message in [
        (["eval"], "eval needs LOGITS and TARGETS, or --demo"),
        (["eval", paths[0]], "eval needs TARGETS after LOGITS"),
        (["eval", *paths, "--demo"], "eval needs LOGITS and TARGETS, or --demo"),
        (["eval", *paths, "--topk", "1,x"], "expected positive integers separated by commas"),
        (["eval", *paths, "--topk", "0"], "expected positive integers"),
        (["eval", *paths, "--batch-rows", "0"], "expected a positive integer, got 0"),
        (["eval", *paths, "--threads", "two"], "expected a positive integer, got 'two'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_errors_exit_non_zero_without_traceback_in_a_subprocess(tmp_path):
    done = run_cli("eval", "missing.npy", "missing_targets.npy", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr == "cecore eval: error: cannot read LOGITS missing.npy: " \
                          "No such file or directory\n"


def test_batch_rows_and_threads_reach_the_evaluator(tmp_path, capsys, rng, monkeypatch):
    paths = save(tmp_path, **dict(zip(("logits", "targets"), make_data(rng, n=1000),
                                      strict=True)))
    seen = []
    update = cecore.Evaluator._update

    def recording(self, logits, target):
        seen.append((logits.shape[0], self.n_threads))
        return update(self, logits, target)

    monkeypatch.setattr(cecore.Evaluator, "_update", recording)
    run_json(capsys, *paths, "--batch-rows", "300", "--threads", "2")
    assert seen == [(300, 2), (300, 2), (300, 2), (100, 2)]


def test_demo_command(capsys, monkeypatch):
    import cecore.__main__ as cli

    cli.demo(n_rows=512, n_classes=10)
    out = capsys.readouterr().out
    loss, reference = (float(v) for v in
                       re.search(r"loss\s+(\S+) nats \(float64 NumPy reference (\S+)\)",
                                 out).groups())
    assert loss == pytest.approx(reference, rel=1e-6)
    assert "512 x 10 float32" in out
    calls = []
    monkeypatch.setattr(cli, "demo", lambda: calls.append("demo"))
    assert main(["demo"]) == 0 and calls == ["demo"]


def test_other_commands_remain(capsys):
    assert main(["config"]) == 0
    assert "simd" in capsys.readouterr().out
