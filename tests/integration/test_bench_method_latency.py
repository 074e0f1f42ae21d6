"""bench/bench_method_latency.py at its smallest settings: one table row per method, positive latencies, PatchCore
fitted for real, and MADD's deployed graph (classification + reconstruction decoder) costlier than the classifier's."""

from __future__ import annotations

import importlib.util

from helpers import REPO, TINY_DATA


def _bench():
    spec = importlib.util.spec_from_file_location("bench_method_latency", REPO / "bench" / "bench_method_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_method_gets_a_row_with_its_latency_and_madd_adds_the_decoder(data_dir, capsys):
    argv = ["--methods", "supervised", "madd", "patchcore", "--image-size", "64", "--repeats", "1",
            "--min-run-time", "0.05", "--max-fit-images", "8", "--data-dir", str(data_dir)]
    for override in TINY_DATA:
        argv += ["--override", override]
    rows = _bench().main(argv)
    out = capsys.readouterr().out

    table = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
             for line in out.splitlines() if line.startswith("| ") and not line.startswith("| method")}
    assert set(table) == {"supervised_awdd", "madd_awdd", "patchcore_awdd"} == set(rows)
    header = [c.strip() for c in next(ln for ln in out.splitlines() if ln.startswith("| method")).strip("|").split("|")]
    latency = header.index("latency ms (median)")
    for name, cells in table.items():
        assert cells[header.index("input")] == "64x64"
        assert float(cells[latency]) > 0 and rows[name]["latency_ms"] > 0, name
    assert table["supervised_awdd"][header.index("vs supervised_awdd")] == "1.00x"
    assert table["supervised_awdd"][header.index("deployed graph")] == "probs"
    assert table["madd_awdd"][header.index("deployed graph")] == "probs + map"
    assert rows["madd_awdd"]["flops"] > rows["supervised_awdd"]["flops"]
    assert rows["madd_awdd"]["params"] > rows["supervised_awdd"]["params"]
    # PatchCore was fitted on exactly the capped pool and says so
    assert "patchcore_awdd: memory bank" in out and "fitted on 8 normal images, capped by --max-fit-images 8" in out
