"""The README's main job: `refrt demo` on the bundled model."""

import json

import pytest

from refrt.cli import main

pytest.importorskip("onnxruntime")


def test_demo_reports_accuracy_agreement_and_quantized_models(capsys):
    assert main(["demo", "--repeats", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    fp32 = {r["runtime"]: r for r in report["rows"]}
    assert fp32["refrt"]["accuracy"] >= 0.95
    assert fp32["refrt"]["accuracy"] == fp32["onnxruntime"]["accuracy"]
    assert report["agreement"]["same_prediction"] == 1.0
    modes = [r["mode"] for r in report["quantized"]]
    assert modes == ["dynamic", "static QDQ", "static QOperator"]
    for row in report["quantized"]:
        assert row["int8"]["refrt"] == row["int8"]["onnxruntime"], row
        assert row["int8"]["refrt"] >= 0.9
        assert row["size_int8"] < row["size_fp32"]


def test_quantize_command(tmp_path, capsys):
    from refrt.cli import DATA_DIR
    out = tmp_path / "q.onnx"
    rc = main(["quantize", f"{DATA_DIR}/digits_cnn.onnx", str(out), "--mode", "dynamic", "--json"])
    assert rc == 0 and out.exists()
    summary = json.loads(capsys.readouterr().out)
    assert summary["mode"] == "dynamic"
    assert summary["op_types"]["Conv"] == {"quantized": 2, "float": 0}
    assert summary["size_after"] < summary["size_before"]
