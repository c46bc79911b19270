import pytest

from guard.protocol import INPUTS, OUTPUTS
from stream_app.triton_client import ModelMismatch, backoff_delays, check_metadata


def _meta(inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, object]:
    return {
        "name": "guard",
        "inputs": [{"name": n, "datatype": t, "shape": ["-1", "1"]} for n, t in inputs.items()],
        "outputs": [{"name": n, "datatype": t, "shape": ["-1", "1"]} for n, t in outputs.items()],
    }


def test_matching_metadata_passes() -> None:
    check_metadata(_meta(INPUTS, OUTPUTS))


def test_wrong_model_is_refused_with_the_difference() -> None:
    with pytest.raises(ModelMismatch, match="inputs do not match"):
        check_metadata(_meta({"INPUT0": "FP32"}, OUTPUTS))
    with pytest.raises(ModelMismatch, match="outputs do not match"):
        check_metadata(_meta(INPUTS, {**OUTPUTS, "P_UNSAFE": "FP16"}))


def test_backoff_grows_and_is_capped() -> None:
    delays = backoff_delays(0.1, 1.0)
    got = [next(delays) for _ in range(8)]
    assert 0.05 <= got[0] <= 0.1
    assert all(d <= 1.0 for d in got)
    assert got[-1] >= 0.5


def test_the_model_config_declares_the_protocol() -> None:
    """config.pbtxt and guard.protocol name the same tensors with the same types."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "model_repo/guard/config.pbtxt").read_text()
    wire = {"TYPE_STRING": "BYTES", "TYPE_FP32": "FP32", "TYPE_BOOL": "BOOL"}

    def block(name: str) -> dict[str, str]:
        body = re.search(rf"^{name} \[(.*?)^\]", text, re.S | re.M)
        assert body is not None
        rows = re.findall(r'name: "(\w+)" data_type: (\w+)', body.group(1))
        return {n: wire[t] for n, t in rows}

    assert block("input") == INPUTS
    assert block("output") == OUTPUTS


def test_served_verdicts_fail_closed() -> None:
    from guard.protocol import read_verdict

    assert read_verdict(b"safe", 0.1, False) == (False, 0.1, False)
    assert read_verdict(b"unsafe", 0.9, False) == (True, 0.9, False)
    assert read_verdict(b"unsafe", 0.9, True) == (True, 0.9, True)
    for word in (b"Safe", b"safe ", b"", b"unknown"):
        assert read_verdict(word, 0.1, False) == (True, 0.1, True)
    for score in (float("nan"), float("inf"), -0.1, 1.5):
        assert read_verdict(b"safe", score, False) == (True, 1.0, True)


def test_each_model_instance_loads_onto_the_device_triton_gave_it(tmp_path) -> None:
    """Triton creates one instance per GPU of the instance group and tells each its kind
    and device id; the instance must load there, not on cuda:0 (where every instance of
    an 8B model would otherwise land)."""
    from guard.serving import ServiceConfig, instance_device

    assert instance_device("GPU", "0") == "cuda:0"
    assert instance_device("GPU", "3") == "cuda:3"
    assert instance_device("KIND_GPU", 1) == "cuda:1"
    assert instance_device("CPU", "0") == "cpu"
    assert instance_device("MODEL", "0") is None  # KIND_MODEL: the model picks
    (tmp_path / "checkpoint").mkdir()
    cfg = ServiceConfig.from_parameters({}, tmp_path, instance_device("GPU", "2"))
    assert cfg.device == "cuda:2"
