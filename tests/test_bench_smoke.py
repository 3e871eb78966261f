"""Smoke test of the benchmark harness (cconv._bench): a --quick run on the seed shape.

Benchmarks print numbers and are not timed tests; this only checks that one run
completes and that its JSON is internally consistent (rates, ratios, peak).
"""
import argparse
import json

import pytest

import cconv
from cconv import _bench


def _run(*argv):
    parser = argparse.ArgumentParser()
    _bench.add_arguments(parser)
    return _bench.run(parser.parse_args(list(argv)))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    threads_before = cconv.get_num_threads()
    code = _run("--quick", "--suite", "seed", "--in-process", "--threads", "1", "--no-progress",
                "--json", str(path))
    return code, path, threads_before


def test_quick_seed_run_succeeds_and_restores_threads(quick_run):
    code, path, threads_before = quick_run
    assert code == 0
    assert path.exists()
    assert cconv.get_num_threads() == threads_before


def test_json_rows_cover_every_op_and_backend(quick_run):
    report = json.loads(quick_run[1].read_text())
    backends = report["settings"]["backends"]
    rows = report["results"]
    assert sorted((r["op"], r["backend"], r["threads"]) for r in rows) == sorted(
        (op, b, 1) for op in ("forward", "backward") for b in backends)
    for r in rows:
        assert [len(samples) for samples in r["process_samples_s"]] == [report["settings"]["repeat"]]


def test_json_numbers_are_consistent(quick_run):
    report = json.loads(quick_run[1].read_text())
    # 2*N*O*Ho*Wo*C*kh*kw for a 5x5 input and a 2x2 kernel (4x4 output); backward is twice that
    forward_flops = 2 * 1 * 1 * 4 * 4 * 1 * 2 * 2
    peak = report["peak"]["float32"]
    assert peak["best"] == max(peak["sources"].values()) > 0
    for r in report["results"]:
        assert r["work"] == forward_flops * (2 if r["op"] == "backward" else 1)
        assert 0 < r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["rate"] == pytest.approx(r["work"] / r["median_s"] / 1e9)
        assert r["pct_peak"] == pytest.approx(100 * r["rate"] / peak["best"])
    by_task = {(r["op"], r["backend"]): r for r in report["results"]}
    for (op, backend), r in by_task.items():
        if (op, "torch") in by_task and backend != "torch":
            assert r["torch_ratio"] == pytest.approx(by_task[op, "torch"]["median_s"] / r["median_s"])
        else:
            assert "torch_ratio" not in r


def test_table_rerenders_from_json(quick_run, capsys):
    capsys.readouterr()
    assert _run("--from-json", str(quick_run[1])) == 0
    table = capsys.readouterr().out
    assert "1x1x5x5 o1 k2 s1 p0" in table
    assert "matmul peak" in table


def test_network_and_sweep_runs_rerender_from_json(tmp_path, capsys):
    """A --networks or --sweep JSON (meta + records) re-renders with its own report, not the suite's."""
    network = {"network": "resnet18-cifar", "batch": 1, "mode": "train", "threads": 1, "forward_gflop": 1.11,
               "cconv_s": 0.08, "torch_s": 0.1, "ratio": 1.25, "samples": {}}
    path = tmp_path / "networks.json"
    path.write_text(json.dumps({"meta": {"networks": ["resnet18-cifar"], "batches": [1], "threads": [1],
                                         "repeat": 3, "dtype": "float32", "torch": "x"},
                                "records": [network]}))
    capsys.readouterr()
    assert _run("--from-json", str(path)) == 0
    out = capsys.readouterr().out
    assert "| resnet18-cifar | 1 | train | 1.11 | 80.0 ms | 100.0 ms | 1.25 |" in out


def test_foreign_json_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "other.json"
    path.write_text("[1, 2]")
    assert _run("--from-json", str(path)) == 2
    assert "not a report written by cconv bench" in capsys.readouterr().err


def test_unknown_backend_is_a_clean_error(capsys):
    assert _run("--quick", "--suite", "seed", "--in-process", "--backends", "no-such-backend") == 2
    assert "no-such-backend" in capsys.readouterr().err


@pytest.mark.parametrize("shape", ["1,1,2,2,1,5,1,0", "1,2,3", "1,1,5,5,1,2,0,0"])
def test_bad_custom_shape_is_an_argparse_error(shape):
    with pytest.raises(SystemExit) as exc:
        _run("--shape", shape)
    assert exc.value.code == 2


def test_nd_sweep_random_conv1d_layers_are_seeded_and_valid():
    """benchmarks/nd_sweep.py --random N --seed S: the same N layers for a seed, each within the
    drawn ranges, with a valid output length and its forward within the sweep's work cap."""
    import importlib.util
    import os
    pytest.importorskip("torch")
    path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "nd_sweep.py")
    spec = importlib.util.spec_from_file_location("nd_sweep", path)
    nd_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nd_sweep)
    cases = nd_sweep.random_conv1d(40, 1)
    assert cases == nd_sweep.random_conv1d(40, 1) and cases != nd_sweep.random_conv1d(40, 2)
    assert any(g == ci > 1 for _, _, ci, _, _, _, _, _, g, _ in cases)   # depthwise drawn
    for _, n, ci, co, length, k, s, d, g, p in cases:
        assert 1 <= n <= 64 and 1 <= ci and 1 <= co and ci % g == 0 and co % g == 0
        assert 256 <= length <= 16000 and 1 <= k <= 11 and 1 <= s <= 4 and 1 <= d <= 8
        out = (length + 2 * p - d * (k - 1) - 1) // s + 1
        assert out >= 1 and n * co * out * (ci // g) * k <= 1e9
