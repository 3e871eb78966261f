"""The random layer sweep and the network suite (cconv._bench_sweep, cconv._bench_networks).

Not timed tests: they check that the sampled layers are valid and follow the
advertised distributions, that the networks have the published sizes, and that a
tiny measurement runs end to end and computes the same thing on both sides.
"""
import collections
import json

import numpy as np
import pytest

from cconv import _bench_networks, _bench_sweep


@pytest.fixture(scope="module")
def layers():
    return _bench_sweep.sample_layers(300, seed=0)


def test_sweep_is_reproducible_and_seed_dependent(layers):
    assert _bench_sweep.sample_layers(300, seed=0) == layers
    assert _bench_sweep.sample_layers(300, seed=1) != layers


def test_sweep_layers_are_valid_and_within_the_work_cap(layers):
    for layer in layers:
        out = layer.output_shape            # raises ValueError on an invalid geometry
        assert min(out) >= 1
        assert layer.macs <= _bench_sweep.MAX_MACS
        assert layer.in_channels % layer.groups == 0 and layer.out_channels % layer.groups == 0


def test_sweep_covers_the_advertised_ranges(layers):
    kinds = collections.Counter(layer.kind for layer in layers)
    assert set(kinds) == set(_bench_sweep.KINDS), kinds
    assert {layer.dtype for layer in layers} == {"float32", "float64"}
    assert min(layer.batch for layer in layers) == 1 and max(layer.batch for layer in layers) >= 128
    assert any(layer.in_channels % 8 for layer in layers)          # channel counts off the SIMD grid
    assert max(layer.in_channels for layer in layers) >= 1024
    assert {(1, 7), (7, 1)} & {layer.kernel for layer in layers}
    assert max(max(layer.kernel) for layer in layers) >= 7
    assert max(layer.dilation[0] for layer in layers) >= 12
    assert max(layer.stride[0] for layer in layers) >= 3
    assert any(layer.padding == "same" for layer in layers)
    assert any(layer.padding != "same" and layer.padding[0] != layer.padding[1] for layer in layers)
    depthwise = [layer for layer in layers if layer.kind == "depthwise"]
    assert {layer.out_channels // layer.in_channels for layer in depthwise} == {1, 2}


@pytest.mark.parametrize("name, gmacs", [("resnet18", 1.81), ("resnet50", 4.09), ("mobilenet_v2", 0.30),
                                         ("vgg16", 15.35)])
def test_network_sizes_match_the_published_multiply_adds(name, gmacs):
    layers = _bench_networks.NETWORKS[name]()
    total = sum(layer.macs for layer in layers if layer.op == "conv") / 1e9
    assert total == pytest.approx(gmacs, rel=0.02)


def test_every_network_chains_valid_layers():
    for name, build in _bench_networks.NETWORKS.items():
        layers = build()
        assert layers, name
        for layer in layers:
            assert min(layer.output_shape) >= 1, (name, layer)


def test_both_sides_compute_the_same_passes():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for layer in _bench_sweep.sample_layers(40, seed=3):
        if layer.macs > 5e7:
            continue
        x, w, gy = layer.arrays(rng)
        ours, theirs = layer.calls("cconv", x, w, gy), layer.calls("torch", x, w, gy, torch)
        for name in layer.passes():
            a = ours[name]()
            a = next(r for r in a if r is not None) if isinstance(a, tuple) else a
            b = theirs[name]()
            b = next(r for r in b if r is not None) if isinstance(b, tuple) else b
            tol = 1e-3 if layer.dtype == "float32" else 1e-9
            np.testing.assert_allclose(a, b.numpy(), rtol=tol, atol=tol * max(1.0, float(np.abs(a).max())),
                                       err_msg=f"{layer.describe()} {name}")


def test_tiny_sweep_and_network_runs_write_their_reports(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(_bench_sweep, "MAX_MACS", 2e6)
    path = tmp_path / "sweep.json"
    assert _bench_sweep.run(4, 0, [1], repeat=1, min_time=0.0, json_path=str(path),
                            markdown_path=str(tmp_path / "sweep.md"), show_progress=False) == 0
    records = json.loads(path.read_text())["records"]
    assert len(records) == 4 * 3 and all(r["ratio"] > 0 for r in records)
    assert "Slowest relative to torch" in (tmp_path / "sweep.md").read_text()
    path = tmp_path / "net.json"
    assert _bench_networks.run(["resnet18-cifar"], [1], [1], 1, json_path=str(path), show_progress=False) == 0
    modes = {r["mode"] for r in json.loads(path.read_text())["records"]}
    assert modes == {"train", "inference"}


def test_tiny_autotune_sweep_reports_the_tuned_algorithms(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import cconv
    if "cython" not in cconv.available_backends():
        pytest.skip("autotune exists in the compiled backend only")
    monkeypatch.setattr(_bench_sweep, "MAX_MACS", 2e6)
    path = tmp_path / "sweep.json"
    assert _bench_sweep.run(3, 1, [1], repeat=1, min_time=0.0, json_path=str(path),
                            markdown_path=str(tmp_path / "sweep.md"), show_progress=False, autotune=True) == 0
    assert cconv.get_autotune() is False            # restored after the run
    records = json.loads(path.read_text())["records"]
    algorithms = set(cconv.backend_info()["conv_algorithms"])
    assert len(records) == 3 * 3
    for r in records:
        assert r["tuned_s"] > 0 and r["tuned_ratio"] > 0
        assert {r["default_algorithm"], r["tuned_algorithm"]} <= algorithms, r
    text = (tmp_path / "sweep.md").read_text()
    assert "Autotune against the planner's choice" in text and "--autotune" in text
