"""The ``cecore eval`` command: .npy files, memory-mapped, in batches of rows."""

import io
import json
import math
import mmap
import os
import re
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from _helpers import assert_metrics_equal, evaluator_result, run_python_child
from ml_dtypes import bfloat16

import cecore
import cecore.__main__
from cecore.__main__ import evaluate_files, main
from cecore._files import CommandError, describe, read_safetensors_header


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
                     "accuracy@5", "entropy", "brier", "ece", "count", "throughput"]
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


def check_error(capsys, argv, *messages):
    """``cecore ARGV`` fails with status 2 and one line on stderr containing ``messages``."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err
    assert len(lines) == 1 and lines[0].startswith("cecore eval: error: "), lines
    assert all(message in lines[0] for message in messages), lines


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
        ([ints, good_t], "has dtype int32; expected float16, bfloat16, float32 or float64"),
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
        (["eval"], "eval needs LOGITS and TARGETS, --logits, or --demo"),
        (["eval", paths[0]], "eval needs TARGETS after LOGITS"),
        (["eval", *paths, "--demo"], "eval needs LOGITS and TARGETS, --logits, or --demo"),
        (["eval", "--logits", paths[0], "--demo"], "or --demo"),
        (["eval", *paths, "--logits", paths[0]], "LOGITS [TARGETS] or --logits/--targets"),
        (["eval", "--targets", paths[1]], "eval needs --logits with --targets"),
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
    assert done.returncode == 2
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


# ------------------------------------------------------------------ .safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def save_st(path, **arrays):
    safetensors_numpy.save_file(arrays, str(path))
    return str(path)


def write_st(path, header, data, header_length=None):
    """A .safetensors file written by hand: ``header`` (a dict or raw bytes), then ``data``."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if header_length is None else header_length
    path.write_bytes(length.to_bytes(8, "little") + raw + data)
    return str(path)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("target_dtype", [np.int64, np.int32, np.uint8])
def test_safetensors_end_to_end(tmp_path, capsys, rng, dtype, target_dtype):
    logits, target = make_data(rng, n=300, k=20, dtype=dtype)
    target = np.where(target < 0, 7, target).astype(target_dtype)
    run = save_st(tmp_path / "run.safetensors", logits=logits, labels=target)
    loss = np.asarray(cecore.cross_entropy(logits, target))  # in the logits' dtype (or f32)
    want, rel = float(loss), 2 * float(np.finfo(loss.dtype).eps)
    keys = ["--logits-key", "logits", "--targets-key", "labels"]
    for argv in ([run, *keys], [run, run, *keys]):  # TARGETS omitted: the same file
        got = run_json(capsys, *argv, "--batch-rows", "64")
        assert got["loss"] == pytest.approx(want, rel=rel)
        assert_metrics_equal(got, evaluator_result(logits, target), rtol=1e-12, other_keys=True)
        assert got["count"] == 300
        assert got["logits"] == f"{run}[logits]" and got["targets"] == f"{run}[labels]"
        assert got["logits_dtype"] == np.dtype(dtype).name
        assert got["targets_dtype"] == np.dtype(target_dtype).name
    # logits in a one-tensor .safetensors file (no key needed), targets in a .npy file
    one = save_st(tmp_path / "one.safetensors", scores=logits)
    (targets_npy,) = save(tmp_path, targets=target)
    got = run_json(capsys, one, targets_npy)
    assert got["loss"] == pytest.approx(want, rel=rel)
    assert got["logits"] == f"{one}[scores]"


def test_safetensors_reader_agrees_with_safe_open(tmp_path, rng):
    from safetensors import safe_open

    arrays = {"a": rng.standard_normal((3, 5)).astype(np.float16),  # odd sizes: unaligned
              "b": rng.standard_normal(7), "c": rng.integers(-5, 5, (2, 3, 4)).astype(np.int8),
              "d": np.zeros((0, 4), np.float32), "e": np.array(3, np.uint32)}
    path = save_st(tmp_path / "many.safetensors", **arrays)
    tensors = read_safetensors_header(path)
    assert sorted(tensors) == sorted(arrays)
    with safe_open(path, framework="numpy") as f:
        for name in arrays:
            got = tensors[name].tensor("T").map()
            expected = f.get_tensor(name)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            np.testing.assert_array_equal(got, expected)


def test_bf16_reader_maps_what_torch_wrote_without_copying(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    values = torch.randn(64, 33, generator=torch.Generator().manual_seed(0)) * 10
    values[0, :4] = torch.tensor([float("inf"), float("-inf"), 1e-40, -0.0])  # edge values
    path = str(tmp_path / "bf16.safetensors")
    save_file({"logits": values.bfloat16(), "labels": torch.arange(64) % 33}, path)
    tensor = describe(path, "LOGITS", "logits")
    logits = tensor.map()
    assert logits.dtype == np.dtype(bfloat16) and logits.shape == (64, 33)
    # bit for bit what torch wrote, and the same values as float32
    want_bits = values.bfloat16().view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(logits.view(np.uint16), want_bits)
    np.testing.assert_array_equal(logits.astype(np.float32), values.bfloat16().float().numpy())
    # zero copy: a view of a read-only mapping of the file, which sees the file change
    assert isinstance(logits.base, mmap.mmap) and not logits.flags.writeable
    with open(path, "r+b") as f:
        f.seek(tensor.offset)
        f.write(np.array([2.5], dtype=bfloat16).tobytes())
    assert float(logits[0, 0]) == 2.5
    targets = describe(path, "TARGETS", "labels").map()
    np.testing.assert_array_equal(targets, np.arange(64) % 33)


def test_bf16_end_to_end(tmp_path, capsys, rng):
    logits, target = make_data(rng, n=300, k=20)
    logits = logits.astype(bfloat16)
    run = save_st(tmp_path / "run.safetensors", logits=logits, labels=target)
    assert main(["eval", run, "--logits-key", "logits", "--targets-key", "labels",
                 "--json", "--topk", "1,5"]) == 0, capsys.readouterr().err
    got = json.loads(capsys.readouterr().out)
    assert got["logits_dtype"] == "bfloat16"
    want = evaluator_result(logits.astype(np.float32), target, topk=(1, 5))
    assert_metrics_equal(got, want, rtol=1e-6, other_keys=True)


def test_safetensors_keys(tmp_path, capsys, rng):
    logits, target = make_data(rng, n=50, k=5)
    run = save_st(tmp_path / "run.safetensors", logits=logits, labels=target, extra=target)
    one = save_st(tmp_path / "one.safetensors", only=logits)
    (npy,) = save(tmp_path, targets=target)
    check_error(capsys, ["eval", run, "--logits-key", "logitz", "--targets-key", "labels"],
                f"LOGITS {run} has no tensor 'logitz' (--logits-key); "
                "its tensors: extra, labels, logits")
    check_error(capsys, ["eval", run, "--logits-key", "logits", "--targets-key", "label"],
                f"TARGETS {run} has no tensor 'label' (--targets-key)")
    check_error(capsys, ["eval", run, npy],
                f"LOGITS {run} holds 3 tensors (extra, labels, logits): "
                "choose one with --logits-key")
    check_error(capsys, ["eval", run, "--logits-key", "logits"],
                "TARGETS " + run + " holds 3 tensors (extra, labels, logits): "
                "choose one with --targets-key")
    check_error(capsys, ["eval", one], f"LOGITS and TARGETS are the same tensor {one}[only]")
    check_error(capsys, ["eval", one, npy, "--targets-key", "t"],
                f"--targets-key applies to .safetensors files; TARGETS {npy} is a .npy file")
    check_error(capsys, ["eval", run, "--logits-key", "labels", "--targets-key", "logits"],
                "has dtype int64; expected float16, bfloat16, float32 or float64")
    assert main(["eval", one, npy, "--json"]) == 0  # one tensor: no key needed
    assert json.loads(capsys.readouterr().out)["count"] == 50 - np.sum(target == -100)


def corrupt_files(tmp_path, rng):
    """(name, path, message) of broken .safetensors files, from a good one."""
    logits = rng.standard_normal((10, 4)).astype(np.float32)
    good = tmp_path / "good.safetensors"
    save_st(good, logits=logits)
    blob = good.read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header, data = blob[8:8 + n], blob[8 + n:]
    entry = {"dtype": "F32", "shape": [10, 4], "data_offsets": [0, 160]}
    cases = {
        "truncated": (blob[:-7], "ends at byte 160 of the data, but the file holds 153 bytes"),
        "header_only": (blob[:8 + n], "the file holds 0 bytes of data: truncated"),
        "short": (blob[:5], "5 bytes, fewer than the 8 of the header length"),
        "empty": (b"", "0 bytes, fewer than the 8"),
        "garbage_header": (blob[:8] + b"{" + bytes(rng.integers(0, 256, n - 1, np.uint8))
                           + data, "the header is not"),
        "not_json": (blob[:8] + b"{logits: F32" + b" " * (n - 12) + data,
                     "the header is not valid JSON"),
        "not_an_object": (None, {"logits": [1, 2]}, data,
                          "tensor 'logits' is not an object with dtype, shape and data_offsets"),
        "length_beyond_file": ((10**6).to_bytes(8, "little") + header + data,
                               "the header length 1,000,000 is larger than the rest of the file"),
        "length_huge": ((2**64 - 1).to_bytes(8, "little") + header + data,
                        "is larger than the rest of the file"),
        "offsets_out_of_bounds": (None, {"logits": {**entry, "data_offsets": [160, 320]}}, data,
                                  "ends at byte 320 of the data"),
        "offsets_reversed": (None, {"logits": {**entry, "data_offsets": [160, 0]}}, data,
                             "not [begin, end] with 0 <= begin <= end"),
        "offsets_not_dtype_x_shape": (None, {"logits": {**entry, "shape": [10, 3]}}, data,
                                      "(160 bytes), but F32 x shape [10, 3] takes 120 bytes"),
        "overlap": (None, {"logits": entry, "b": {**entry, "shape": [2],
                                                  "data_offsets": [152, 160]}}, data,
                    "tensors 'logits' and 'b' overlap"),
        "hole": (None, {"logits": {**entry, "shape": [9, 4], "data_offsets": [0, 144]}}, data,
                 "16 bytes after the last tensor's data"),
        "unknown_dtype": (None, {"logits": {**entry, "dtype": "F12"}}, data,
                          "tensor 'logits' has unknown dtype 'F12'"),
        "bad_shape": (None, {"logits": {**entry, "shape": [10, -4]}}, data,
                      "has shape [10, -4], not a list of non-negative integers"),
        "bad_metadata": (None, {"__metadata__": {"a": 1}, "logits": entry}, data,
                         "__metadata__ is not an object of strings"),
        "duplicate_key": (None, b'{"logits": ' + json.dumps(entry).encode() + b', "logits": '
                          + json.dumps(entry).encode() + b"}", data,
                          "the header names 'logits' twice"),
        "not_utf8": (blob[:8] + b"{\xff" + header[2:] + data, "the header is not UTF-8 text"),
    }
    files = []
    for name, case in cases.items():
        path = tmp_path / f"{name}.safetensors"
        if case[0] is None:
            write_st(path, case[1], case[2])
        else:
            path.write_bytes(case[0])
        files.append((name, str(path), case[-1]))
    return files


def test_corrupt_safetensors_files_exit_2_with_one_line(tmp_path, capsys, rng):
    (targets,) = save(tmp_path, targets=np.zeros(10, dtype=np.int64))
    files = corrupt_files(tmp_path, rng)
    assert len(files) == 19
    for _, path, message in files:
        check_error(capsys, ["eval", path, targets], message, f"LOGITS {path}")
        with pytest.raises(CommandError, match=re.escape(message)):  # the reader itself
            describe(path, "LOGITS")


def test_corrupt_files_in_a_subprocess_print_no_traceback(tmp_path, rng):
    (targets,) = save(tmp_path, targets=np.zeros(10, dtype=np.int64))
    for _, path, message in corrupt_files(tmp_path, rng)[:4]:
        done = run_cli("eval", path, targets, cwd=tmp_path)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


# ------------------------------------------------------------------ shards


def write_shards(tmp_path, rng, sizes, k=12, kinds=None):
    """Shards of logits and targets under tmp_path/logits and tmp_path/targets."""
    (tmp_path / "logits").mkdir()
    (tmp_path / "targets").mkdir()
    all_logits, all_targets = [], []
    for i, n in enumerate(sizes):
        logits, target = make_data(rng, n=n, k=k)
        if kinds and kinds[i] == "safetensors":
            save_st(tmp_path / "logits" / f"part_{i}.safetensors", logits=logits)
        else:
            np.save(tmp_path / "logits" / f"part_{i}.npy", logits)
        np.save(tmp_path / "targets" / f"part_{i}.npy", target)
        all_logits.append(logits)
        all_targets.append(target)
    return np.concatenate(all_logits), np.concatenate(all_targets)


def test_shards_by_glob_and_directory(tmp_path, capsys, rng):
    # 11 shards: sorted with digit runs as numbers (part_2 before part_10), as the
    # targets' names sort; one shard is .safetensors
    sizes = [50, 31, 7, 0, 64, 1, 20, 33, 5, 9, 40]
    kinds = ["npy"] * 11
    kinds[3] = kinds[10] = "safetensors"
    logits, target = write_shards(tmp_path, rng, sizes, kinds=kinds)
    want = evaluator_result(logits, target, topk=(1, 3))
    for argv in (["--logits", str(tmp_path / "logits" / "part_*"),
                  "--targets", str(tmp_path / "targets" / "*.npy")],
                 ["--logits", str(tmp_path / "logits"), "--targets", str(tmp_path / "targets")],
                 ["--logits", str(tmp_path / "**" / "part_*.*"),  # recursive glob, no match
                  "--targets", str(tmp_path / "targets")]):
        if "**" in argv[1]:
            check_error(capsys, ["eval", *argv], "names 22 files but --targets")
            continue
        got = run_json(capsys, *argv, "--topk", "1,3", "--batch-rows", "16")
        assert_metrics_equal(got, want, rtol=1e-12, other_keys=True)
        assert [s["positions"] for s in got["shards"]] == sizes
        assert [os.path.basename(s["logits"]).split(".")[0] for s in got["shards"]] == \
               [f"part_{i}" for i in range(11)]
        assert got["positions"] == sum(sizes) and got["logits_shape"] is None
        assert got["logits"] == argv[1] and got["targets"] == argv[3]
    assert main(["eval", "--logits", str(tmp_path / "logits"), "--targets",
                 str(tmp_path / "targets")]) == 0
    assert "(11 shards, 12 classes, float32)" in capsys.readouterr().out


def test_shards_that_do_not_pair_up(tmp_path, capsys, rng):
    write_shards(tmp_path, rng, [10, 20, 30])
    logits_dir, targets_dir = str(tmp_path / "logits"), str(tmp_path / "targets")
    check_error(capsys, ["eval", "--logits", logits_dir, "--targets",
                         str(tmp_path / "targets" / "part_[01].npy")],
                f"--logits {logits_dir} names 3 files but --targets")
    check_error(capsys, ["eval", "--logits", str(tmp_path / "nothing*"), "--targets",
                         targets_dir], "matches no files")
    (tmp_path / "empty").mkdir()
    check_error(capsys, ["eval", "--logits", str(tmp_path / "empty")],
                "the directory has no .npy or .safetensors files")
    np.save(tmp_path / "targets" / "part_1.npy", np.zeros(21, dtype=np.int64))
    check_error(capsys, ["eval", "--logits", logits_dir, "--targets", targets_dir],
                f"TARGETS {tmp_path / 'targets' / 'part_1.npy'} has shape (21,), expected (20,)")
    np.save(tmp_path / "targets" / "part_1.npy", np.zeros(20, dtype=np.int64))
    np.save(tmp_path / "logits" / "part_2.npy", np.zeros((30, 13), dtype=np.float32))
    check_error(capsys, ["eval", "--logits", logits_dir, "--targets", targets_dir],
                "has 13 classes but")
    check_error(capsys, ["eval", "--logits", logits_dir],  # .npy shards hold no targets
                "no TARGETS for LOGITS")


def test_target_out_of_range_in_a_shard_is_named_by_its_file(tmp_path, capsys, rng):
    write_shards(tmp_path, rng, [10, 20])
    target = np.load(tmp_path / "targets" / "part_1.npy")
    target[13] = 99
    np.save(tmp_path / "targets" / "part_1.npy", target)
    check_error(capsys, ["eval", "--logits", str(tmp_path / "logits"), "--targets",
                         str(tmp_path / "targets"), "--batch-rows", "4"],
                f"TARGETS {tmp_path / 'targets' / 'part_1.npy'}: target[13] = 99 is out of range")


def test_progress_bar_covers_all_shards(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(cecore.__main__, "PROGRESS_SECONDS", 0.0)  # draw every batch
    write_shards(tmp_path, rng, [300, 200, 500])
    logits = sorted(str(p) for p in (tmp_path / "logits").iterdir())
    targets = sorted(str(p) for p in (tmp_path / "targets").iterdir())
    terminal = FakeTerminal()
    evaluate_files(logits, targets, batch_rows=100, progress=terminal)
    frames = terminal.getvalue().split("\r")
    done = [int(f.split("/")[0].replace(",", "")) for f in frames if "/1,000 rows" in f]
    assert done == list(range(100, 1001, 100))  # one bar across the shards
    assert "GB/s" in frames[-2] and "ETA" in frames[-2]
    pipe = io.StringIO()
    evaluate_files(logits, targets, batch_rows=100, progress=pipe)
    assert pipe.getvalue() == ""


def test_shards_in_a_subprocess_print_nothing_on_stderr(tmp_path, rng):
    write_shards(tmp_path, rng, [30, 40])
    done = run_cli("eval", "--logits", "logits", "--targets", "targets", "--batch-rows", "5",
                   cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""  # no progress bar: stderr is a pipe
    assert re.search(r"count +\d+ of 70 positions", done.stdout), done.stdout


# ------------------------------------------------ --shift, --temperature, sizes, per-token, plot


def sequences(rng, shape=(6, 17, 30), ignored=0.2):
    logits = rng.standard_normal(shape, dtype=np.float32) * 2
    target = rng.integers(0, shape[-1], shape[:-1])
    target[rng.random(target.shape) < ignored] = -100
    return logits, target


@pytest.mark.parametrize("batch_rows", [None, 1, 4])
def test_shift_and_temperature_match_the_evaluator(tmp_path, capsys, rng, batch_rows):
    logits, target = sequences(rng)
    paths = save(tmp_path, logits=logits, targets=target)
    extra = [] if batch_rows is None else ["--batch-rows", str(batch_rows)]
    got = run_json(capsys, *paths, "--shift", "--temperature", "1.7", *extra)
    want = evaluator_result(logits, target, shift=True, temperature=1.7)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert got["positions"] == 6 * 16


@pytest.mark.parametrize("batch_rows", [1, 2, 5, 16, 17, 100])
def test_shift_on_one_sequence_loses_no_pair_at_batch_boundaries(tmp_path, capsys, rng,
                                                                batch_rows):
    logits, target = sequences(rng, shape=(17, 30))
    paths = save(tmp_path, logits=logits, targets=target)
    got = run_json(capsys, *paths, "--shift", "--batch-rows", str(batch_rows))
    # By hand: positions 0..15 of the logits against targets 1..16.
    kept = target[1:] != -100
    lp = logits[:-1].astype(np.float64)
    lse = np.log(np.exp(lp - lp.max(1, keepdims=True)).sum(1)) + lp.max(1)
    losses = lse - lp[np.arange(16), np.where(kept, target[1:], 0)]
    assert got["count"] == kept.sum() and got["positions"] == 16
    assert got["loss"] == pytest.approx(losses[kept].mean(), rel=1e-6)


def test_shift_needs_sequences_with_classes_last(tmp_path, capsys, rng):
    logits, target = make_data(rng, n=40, k=10)
    paths = save(tmp_path, logits=logits[0], targets=target[0])
    check_error(capsys, ["eval", *paths, "--shift"], "--shift needs LOGITS of shape (..., T, V)")
    paths = save(tmp_path, logits=logits.T.copy(), targets=target)
    check_error(capsys, ["eval", *paths, "--shift", "--axis", "0"], "class axis last")


def test_bytes_and_words_give_lm_eval_corpus_metrics(tmp_path, capsys, rng):
    logits, target = sequences(rng)
    paths = save(tmp_path, logits=logits, targets=target)
    got = run_json(capsys, *paths, "--shift", "--bytes", "12345", "--words", "2345",
                   "--batch-rows", "2")
    total_loss = got["loss"] * got["count"]  # L: the summed loss in nats
    assert got["bits_per_byte"] == pytest.approx(total_loss / (math.log(2) * 12345), rel=1e-12)
    assert got["byte_perplexity"] == pytest.approx(math.exp(total_loss / 12345), rel=1e-12)
    assert got["word_perplexity"] == pytest.approx(math.exp(total_loss / 2345), rel=1e-12)
    check_error(capsys, ["eval", *paths, "--bytes", "10", "--label-smoothing", "0.1"],
                "not with weight or label_smoothing")
    check_error(capsys, ["eval", *paths, "--words", "-1"], "n_words must be >= 0")
    check_error(capsys, ["eval", *paths, "--temperature", "0"], "temperature")


def test_table_shows_the_corpus_metrics(tmp_path, capsys, rng):
    logits, target = make_data(rng)
    paths = save(tmp_path, logits=logits, targets=target)
    assert main(["eval", *paths, "--bytes", "5000"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "bits_per_byte" in names and "byte_perplexity" in names
    assert "word_perplexity" not in names


@pytest.mark.parametrize("shift", [False, True])
def test_per_token_file_holds_token_stats_of_every_position(tmp_path, capsys, rng, shift):
    shards = []
    for i, shape in enumerate([(3, 9, 20), (5, 9, 20)]):
        logits, target = sequences(rng, shape)
        shards.append((logits, target))
        np.save(tmp_path / f"logits_{i}.npy", logits)
        np.save(tmp_path / f"targets_{i}.npy", target)
    out = tmp_path / "tokens.npz"
    got = run_json(capsys, "--logits", str(tmp_path / "logits_*.npy"),
                   "--targets", str(tmp_path / "targets_*.npy"), "--per-token", str(out),
                   "--batch-rows", "2", "--temperature", "0.8", *(["--shift"] if shift else []))
    assert got["per_token"] == str(out)
    saved = np.load(out)
    assert sorted(saved.files) == sorted(["logprob", "lse", "entropy", "argmax", "rank",
                                          "is_greedy", "mask", "shard_positions"])
    want = [cecore.token_stats(z, t, shift=shift, temperature=0.8) for z, t in shards]
    assert saved["shard_positions"].tolist() == [w.mask.size for w in want]
    for field in ("logprob", "lse", "entropy", "argmax", "rank", "is_greedy", "mask"):
        expected = np.concatenate([getattr(w, field).ravel() for w in want])
        assert saved[field].dtype == expected.dtype, field
        np.testing.assert_array_equal(saved[field], expected, err_msg=field)
    assert int(saved["mask"].sum()) == got["count"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".cecore")] == []


def test_per_token_file_is_not_left_behind_on_error(tmp_path, capsys, rng):
    logits, target = make_data(rng, n=100, k=10)
    target[77] = 10
    paths = save(tmp_path, logits=logits, targets=target)
    out = tmp_path / "tokens.npz"
    check_error(capsys, ["eval", *paths, "--per-token", str(out), "--batch-rows", "10"],
                "target[77] = 10 is out of range")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logits.npy", "targets.npy"]


def test_plot_writes_a_png(tmp_path, capsys, rng):
    pytest.importorskip("matplotlib")
    logits, target = make_data(rng)
    paths = save(tmp_path, logits=logits, targets=target)
    out = tmp_path / "report.png"
    got = run_json(capsys, *paths, "--plot", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(got["calibration"]["count"]) == got["count"]
    losses = cecore.cross_entropy(logits, target, reduction="none")[target != -100]
    want = np.bincount(np.minimum(losses // 0.1, 299).astype(int), minlength=300)
    assert got["loss_histogram"]["count"] == want.tolist()


def test_plot_without_matplotlib_says_what_to_install(tmp_path, capsys, rng, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    paths = save(tmp_path, **dict(zip(("logits", "targets"), make_data(rng, n=10),
                                      strict=True)))
    check_error(capsys, ["eval", *paths, "--plot", str(tmp_path / "x.png")],
                "pip install 'cecore[plot]'")
    assert not (tmp_path / "x.png").exists()


def test_importing_cecore_and_its_cli_imports_no_optional_package(tmp_path):
    code = ("import sys, cecore, cecore.__main__; "
            "print(sorted(m for m in ('matplotlib', 'torch', 'dask', 'scipy', 'sklearn', 'jax') "
            "if m in sys.modules))")
    done = run_python_child(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------ compare

from cecore.__main__ import compare_files  # noqa: E402


def make_pair(rng, shape=(1000, 50), noise=0.3, dtype=np.float32, ignore=0.05):
    """A reference's logits, a perturbed ('quantised') model's and targets."""
    ref = (rng.standard_normal(shape) * 2).astype(np.float32)
    target = rng.integers(0, shape[-1], shape[:-1])
    model = (ref + noise * rng.standard_normal(shape)).astype(dtype)
    target[rng.random(shape[:-1]) < ignore] = -100
    return model, ref, target


def in_memory(model, ref, target, **options):
    c = cecore.Comparison(**options)
    c.update(model, ref, target)
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in c.result().items()}


def compare_json(capsys, *argv):
    assert main(["compare", *argv, "--json"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return json.loads(out)


def assert_same_statistics(got, want):
    # sums are exact and percentiles sorted: batches change nothing, to the last bit
    for key, value in want.items():
        assert got[key] == value, key


@pytest.mark.parametrize("batch_rows", [None, 1, 7, 999, 5000])
def test_compare_json_matches_the_comparison_in_memory(tmp_path, capsys, rng, batch_rows):
    model, ref, target = make_pair(rng)
    paths = save(tmp_path, model=model, ref=ref, targets=target)
    extra = [] if batch_rows is None else ["--batch-rows", str(batch_rows)]
    got = compare_json(capsys, *paths, *extra)
    assert_same_statistics(got, in_memory(model, ref, target))
    assert got["count"] == np.count_nonzero(target != -100) and got["positions"] == 1000
    assert got["logits_shape"] == [1000, 50] and got["model_dtype"] == "float32"
    assert got["ref_dtype"] == "float32" and got["targets_dtype"] == "int64"
    assert got["model"] == paths[0] and got["ref"] == paths[1] and got["shift"] is False
    assert got["seconds"] > 0 and got["gb_per_s"] > 0


def test_compare_options_dtypes_and_axis(tmp_path, capsys, rng):
    model, ref, target = make_pair(rng, (200, 30), dtype=np.float16)
    target[target == -100] = 3
    target[::4] = -1
    paths = save(tmp_path, model=model.T, ref=ref.T, targets=target)
    got = compare_json(capsys, *paths, "--axis", "0", "--ignore-index", "-1",
                       "--threads", "2", "--batch-rows", "16")
    assert_same_statistics(got, in_memory(model, ref, target, ignore_index=-1))
    assert got["axis"] == 0 and got["model_dtype"] == "float16"


@pytest.mark.parametrize("shape", [(301, 40), (4, 75, 40)])
def test_compare_shift(tmp_path, capsys, rng, shape):
    model, ref, target = make_pair(rng, shape)
    paths = save(tmp_path, model=model, ref=ref, targets=target)
    want = in_memory(model, ref, target, shift=True)
    for batch_rows in ("1", "3", "1000"):
        got = compare_json(capsys, *paths, "--shift", "--batch-rows", batch_rows)
        assert_same_statistics(got, want)
        assert got["shift"] is True
        assert got["positions"] == math.prod(shape[:-2]) * (shape[-2] - 1)


def test_compare_table(tmp_path, capsys, rng):
    model, ref, target = make_pair(rng, (500, 20))
    paths = save(tmp_path, model=model, ref=ref, targets=target)
    assert main(["compare", *paths]) == 0
    out = capsys.readouterr().out
    stats = in_memory(model, ref, target)
    # llama.cpp's report, line by line, with its ± standard errors
    for line in [
        f"Mean PPL(Q)                   : {stats['ppl']:10.6f} ± {stats['ppl_stderr']:10.6f}",
        f"Mean PPL(base)                : {stats['ref_ppl']:10.6f} ± ",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * stats['logprob_corr']:6.2f}%",
        f"Mean ln(PPL(Q)/PPL(base))     : {stats['ln_ppl_ratio']:10.6f} ± "
        f"{stats['ln_ppl_ratio_stderr']:10.6f}",
        f"Mean PPL(Q)/PPL(base)         : {stats['ppl_ratio']:10.6f} ± "
        f"{stats['ppl_ratio_stderr']:10.6f}",
        "Mean PPL(Q)-PPL(base)         : ",
        f"Mean    KLD: {stats['kl_mean']:10.6f} ± {stats['kl_mean_stderr']:10.6f}",
        f"Maximum KLD: {stats['kl_max']:10.6f}",
        f"99.9%   KLD: {stats['kl_p99.9']:10.6f}",
        f"Median  KLD: {stats['kl_median']:10.6f}",
        f" 0.1%   KLD: {stats['kl_p0.1']:10.6f}",
        f"Minimum KLD: {stats['kl_min']:10.6f}",
        f"Mean    Δp: {100 * stats['dp_mean']:6.3f} ± {100 * stats['dp_mean_stderr']:6.3f} %",
        f"75.0%   Δp: {100 * stats['dp_p75']:6.3f}%",
        f" 1.0%   Δp: {100 * stats['dp_p1']:6.3f}%",
        f"RMS Δp    : {100 * stats['dp_rms']:6.3f} ± {100 * stats['dp_rms_stderr']:6.3f} %",
        f"Same top p: {100 * stats['same_top']:6.3f} ± {100 * stats['same_top_stderr']:6.3f} %",
    ]:
        assert "\n" + line in out, line
    assert "====== KL divergence statistics ======" in out
    count = stats["count"]
    assert f"{count:,} of 500 positions ({500 - count:,} ignored)" in out
    assert out.index("Maximum KLD") < out.index("99.9%   KLD") < out.index("Minimum KLD")


def test_compare_safetensors(tmp_path, capsys, rng):
    model, ref, target = make_pair(rng, (300, 24))
    want = in_memory(model, ref, target)
    run = save_st(tmp_path / "run.safetensors", logits=model, labels=target)
    base = save_st(tmp_path / "base.safetensors", logits=ref)
    # targets in MODEL's file; REF's tensor found by --logits-key
    got = compare_json(capsys, run, base, "--logits-key", "logits", "--targets-key", "labels")
    assert_same_statistics(got, want)
    assert got["model"] == f"{run}[logits]" and got["targets"] == f"{run}[labels]"
    # one file holding all three
    both = save_st(tmp_path / "both.safetensors", q=model, f=ref, labels=target)
    got = compare_json(capsys, both, both, "--logits-key", "q", "--ref-key", "f",
                       "--targets-key", "labels", "--batch-rows", "50")
    assert_same_statistics(got, want)
    # a .npy REF beside --logits-key
    (ref_npy, targets_npy) = save(tmp_path, ref=ref, targets=target)
    got = compare_json(capsys, run, ref_npy, targets_npy, "--logits-key", "logits")
    assert_same_statistics(got, want)
    check_compare_error(capsys, ["compare", both, both, "--logits-key", "q",
                                 "--targets-key", "labels"],
                        f"MODEL and REF are the same tensor {both}[q] (choose REF's tensor "
                        "with --ref-key)")


def test_compare_bf16_safetensors(tmp_path, capsys, rng):
    model, ref, target = make_pair(rng, (200, 16), dtype=bfloat16)
    ref = ref.astype(bfloat16)
    run = save_st(tmp_path / "run.safetensors", logits=model, labels=target)
    base = save_st(tmp_path / "base.safetensors", logits=ref)
    got = compare_json(capsys, run, base, "--logits-key", "logits", "--targets-key", "labels")
    assert got["model_dtype"] == got["ref_dtype"] == "bfloat16"
    assert_same_statistics(got, in_memory(model, ref, target))


def test_compare_shards(tmp_path, capsys, rng):
    sizes = [40, 0, 13, 77]
    parts = [make_pair(rng, (n, 9)) for n in sizes]
    for name in ("model", "ref", "targets"):
        (tmp_path / name).mkdir()
    for i, (model, ref, target) in enumerate(parts):
        np.save(tmp_path / "model" / f"part_{i}.npy", model)
        np.save(tmp_path / "ref" / f"part_{i}.npy", ref)
        np.save(tmp_path / "targets" / f"part_{i}.npy", target)
    want = in_memory(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
    got = compare_json(capsys, "--model", str(tmp_path / "model"), "--ref",
                       str(tmp_path / "ref" / "*.npy"), "--targets", str(tmp_path / "targets"),
                       "--batch-rows", "10")
    assert_same_statistics(got, want)
    assert len(got["shards"]) == 4 and got["positions"] == sum(sizes)
    assert got["logits_shape"] is None
    check_compare_error(capsys, ["compare", "--model", str(tmp_path / "model"), "--ref",
                                 str(tmp_path / "ref" / "part_[01].npy"), "--targets",
                                 str(tmp_path / "targets")],
                        "names 4 files but --ref")


def check_compare_error(capsys, argv, *messages):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cecore compare: error: "), lines
    assert all(message in lines[0] for message in messages), lines


def test_compare_input_errors(tmp_path, capsys, rng):
    model, ref, target = make_pair(rng, (300, 10), ignore=0.0)
    good, good_ref, good_t = save(tmp_path, model=model, ref=ref, targets=target)
    wide, short, ints, ref3d, t10 = save(tmp_path, wide=ref[:, :9], short=ref[:299],
                                         ints=target.reshape(300, 1).repeat(10, 1),
                                         ref3d=ref.reshape(300, 10, 1), t10=target[:10])
    missing = str(tmp_path / "missing.npy")
    cases = [
        ([good, wide, good_t], f"MODEL {good} has shape (300, 10) but REF {wide} has shape "
                               "(300, 9): the two models' logits must have the same shape"),
        ([good, short, good_t], "but REF", "has shape (299, 10)"),
        ([good, ref3d, good_t], "has shape (300, 10, 1)"),
        ([missing, good_ref, good_t], f"cannot read MODEL {missing}: No such file"),
        ([good, missing, good_t], f"cannot read REF {missing}"),
        ([good, good_ref, missing], f"cannot read TARGETS {missing}"),
        ([good, ints, good_t], f"REF {ints} has dtype int64; expected float16"),
        ([ints, good_ref, good_t], f"MODEL {ints} has dtype int64"),
        ([good, good_ref, good_ref], "has dtype float32; expected integers"),
        ([good, good_ref, good_t, "--axis", "2"], "axis 2 is out of range"),
        ([good, good_ref, t10, "--axis", "0", "--shift"],
         "--shift needs MODEL of shape (..., T, V) with the class axis last"),
    ]
    for argv, *messages in cases:
        check_compare_error(capsys, ["compare", *argv], *messages)


def test_compare_target_out_of_range_is_named_by_its_index_in_the_file(tmp_path, capsys, rng):
    model, ref, target = make_pair(rng, (1000, 10), ignore=0.0)
    target[777] = 10
    paths = save(tmp_path, model=model, ref=ref, targets=target)
    message = "target[777] = 10 is out of range: class indices must be in [0, 10)"
    check_compare_error(capsys, ["compare", *paths, "--batch-rows", "100"], message)
    check_compare_error(capsys, ["compare", *paths, "--batch-rows", "100", "--shift"], message)
    target[777] = 0
    t3 = target.reshape(20, 50)
    t3[13, 37] = -5
    paths = save(tmp_path, model=model.reshape(20, 50, 10), ref=ref.reshape(20, 50, 10),
                 targets=t3)
    for extra in ([], ["--shift"]):
        check_compare_error(capsys, ["compare", *paths, "--batch-rows", "3", *extra],
                            f"TARGETS {paths[2]}: target[13, 37] = -5 is out of range")


def test_compare_usage_errors(tmp_path, capsys, rng):
    paths = save(tmp_path, **dict(zip(("model", "ref", "targets"), make_pair(rng, (10, 4)),
                                      strict=True)))
    for argv, message in [
        (["compare"], "compare needs MODEL REF TARGETS"),
        (["compare", paths[0]], "compare needs REF after MODEL"),
        (["compare", *paths[:2]], "compare needs TARGETS after REF"),
        (["compare", *paths, "--model", paths[0]], "not both"),
        (["compare", "--ref", paths[1]], "compare needs --model"),
        (["compare", "--model", paths[0]], "compare needs --ref with --model"),
        (["compare", *paths, "--batch-rows", "0"], "expected a positive integer, got 0"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_compare_streams_memory_mapped_files(tmp_path, rng):
    model, ref, target = make_pair(rng, (4000, 500))  # 8 MB each
    paths = save(tmp_path, model=model, ref=ref, targets=target)
    tracemalloc.start()
    try:
        stats, _ = compare_files(*paths, batch_rows=20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats["count"] == np.count_nonzero(target != -100)
    assert peak < model.nbytes / 5  # nothing of the logits' size


def test_compare_progress_bar(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(cecore.__main__, "PROGRESS_SECONDS", 0.0)
    paths = save(tmp_path, **dict(zip(("model", "ref", "targets"), make_pair(rng, (1000, 8)),
                                      strict=True)))
    terminal = FakeTerminal()
    compare_files(*paths, batch_rows=250, progress=terminal)
    frames = terminal.getvalue().split("\r")
    done = [int(f.split("/")[0].replace(",", "")) for f in frames if "/1,000 rows" in f]
    assert done == [250, 500, 750, 1000]
    assert terminal.getvalue().endswith("\r\033[K")
    pipe = io.StringIO()
    compare_files(*paths, progress=pipe)
    assert pipe.getvalue() == ""


def test_compare_in_a_subprocess(tmp_path, rng):
    paths = save(tmp_path, **dict(zip(("model", "ref", "targets"), make_pair(rng, (50, 8)),
                                      strict=True)))
    done = run_cli("compare", *paths, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert "Same top p" in done.stdout
    done = run_cli("compare", paths[0], "missing.npy", paths[2], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "cecore compare: error: cannot read REF missing.npy: " \
                          "No such file or directory\n"
