from pathlib import Path

import pytest
from pydantic import SecretStr

from training import promote
from training.metrics import binary_report, per_category_auprc, recall_at_fpr


def _repo(tmp_path: Path) -> Path:
    model = tmp_path / "repo" / "guard"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.py").write_text("# adapter")
    (model / "config.pbtxt").write_text('name: "guard"')
    return model


def test_promote_adds_the_next_version_with_its_weights(tmp_path: Path) -> None:
    model = _repo(tmp_path)
    cand = tmp_path / "cand"
    cand.mkdir()
    (cand / "config.json").write_text("{}")
    assert promote.promote(model, cand) == 2
    assert (model / "2" / "model.py").read_text() == "# adapter"
    assert (model / "2" / "checkpoint" / "config.json").exists()
    assert promote.versions(model) == [1, 2]
    assert promote.checkpoint_of(model, 2) == model / "2" / "checkpoint"
    assert not [p for p in model.iterdir() if p.name.startswith(".")], "no staging left"


def test_rollback_archives_newer_versions(tmp_path: Path) -> None:
    model = _repo(tmp_path)
    cand = tmp_path / "cand"
    cand.mkdir()
    for _ in range(3):
        promote.promote(model, cand)
    assert promote.rollback(model) == [4]
    assert promote.rollback(model, to=1) == [2, 3]
    assert promote.versions(model) == [1]
    assert len(list((model.parent / ".archive").iterdir())) == 3
    with pytest.raises(ValueError, match="only one version"):
        promote.rollback(model)
    # A promotion after a rollback takes a new number: 2, 3 and 4 named other weights.
    assert promote.promote(model, cand) == 5
    assert promote.versions(model) == [1, 5]


def test_binary_report_on_known_numbers() -> None:
    r = binary_report([True, True, False, False], [0.9, 0.4, 0.6, 0.1], [True, False, True, False])
    assert (r["tp"], r["fp"], r["fn"]) == (1, 1, 1)
    assert r["precision"] == 0.5 and r["recall"] == 0.5 and r["fpr"] == 0.5
    assert r["auprc"] == pytest.approx(0.8333, abs=1e-3)
    assert binary_report([True, True], [0.1, 0.2], [False, False])["auprc"] is None


def test_recall_at_a_false_positive_rate() -> None:
    # 100 negatives scored 0.00..0.99; at 1% FPR one negative (0.99) may be flagged,
    # so the threshold sits at the second-highest negative (0.98).
    negatives = [i / 100 for i in range(100)]
    positives = [0.5, 0.985, 0.99, 1.0]
    labels = [False] * 100 + [True] * 4
    scores = negatives + positives
    assert recall_at_fpr(labels, scores, 0.01) == 0.75
    assert recall_at_fpr(labels, scores, 0.0) == 0.25  # only above every negative
    assert recall_at_fpr(labels, scores, 0.5) == 1.0
    assert recall_at_fpr([True, True], [0.1, 0.2], 0.01) is None
    # A positive tied with the threshold negative is not counted (ties go against).
    assert recall_at_fpr([False, True], [0.7, 0.7], 0.0) == 0.0
    assert binary_report(labels, scores, [s > 0.5 for s in scores])["recall_at_1pct_fpr"] == 0.75


def test_eval_reports_each_source_of_a_mixed_file() -> None:
    from guard.conversation import Role, Turn
    from training.dataset import Example
    from training.evaluate import report_from_scores

    def ex(i: int, unsafe: bool, source: str) -> Example:
        turns = (Turn(Role.USER, f"t{i}"),)
        return Example(f"e{i}", f"c{i}", turns, unsafe, ("O1",) if unsafe else (), source=source)

    examples = [ex(0, True, "a"), ex(1, False, "a"), ex(2, False, "b"), ex(3, False, "b")]
    r = report_from_scores(examples, [0.9, 0.2, 0.7, 0.1], [True, False, True, False])
    assert r["per_source"]["a"]["auprc"] == 1.0 and r["per_source"]["a"]["fpr"] == 0.0
    assert r["per_source"]["b"]["fpr"] == 0.5 and r["per_source"]["b"]["auprc"] is None
    assert "per_source" not in report_from_scores(examples[:2], [0.9, 0.2], [True, False])


def test_per_category_compares_each_category_with_safe_rows() -> None:
    out = per_category_auprc([True, True, False], [["O1"], ["O2"], []], [0.9, 0.2, 0.5])
    assert out == {"O1": 1.0, "O2": 0.5}


def test_model_parameters_read_as_triton_does(tmp_path: Path) -> None:
    from training.retrain import model_parameters

    shipped = Path(__file__).resolve().parents[2] / "model_repo" / "guard"
    assert model_parameters(shipped) == {}  # the shipped config sets none; comments are not
    (tmp_path / "config.pbtxt").write_text(
        '# parameters: { key: "prompt_format" value: { string_value: "lg3" } }\n'
        'parameters: { key: "threshold" value: { string_value: "0.7" } }\n'
    )
    assert model_parameters(tmp_path) == {"threshold": "0.7"}


def test_model_control_headers_carry_the_key_only_when_set() -> None:
    # Triton checks a restricted gRPC protocol's key as "triton-grpc-protocol-<key>".
    header = "triton-grpc-protocol-guardstream-model-control"
    assert promote.model_control_headers(SecretStr("k3y")) == {header: "k3y"}
    assert promote.model_control_headers("k3y") == {header: "k3y"}
    assert promote.model_control_headers(None) == {}
    assert promote.model_control_headers("") == {}


def _resolver(table: dict[str, list[tuple[int, str]]]):
    """A stand-in for socket.getaddrinfo over a fixed name table (pure logic only)."""
    import socket

    def resolve(host: str, port: int, type: int = 0) -> list[tuple]:
        if host not in table:
            raise socket.gaierror(f"unknown host {host}")
        return [(family, type, 6, "", (addr, port)) for family, addr in table[host]]

    return resolve


def test_a_headless_service_name_stands_for_every_replica() -> None:
    import socket

    resolve = _resolver(
        {
            "triton-replicas.ns.svc": [
                (socket.AF_INET, "10.0.0.7"),
                (socket.AF_INET, "10.0.0.9"),
                (socket.AF_INET, "10.0.0.7"),  # each address once
            ],
            "10.0.0.9": [(socket.AF_INET, "10.0.0.9")],
            "fd00::3": [(socket.AF_INET6, "fd00::3")],
        }
    )
    assert promote.replica_addresses(
        ["triton-replicas.ns.svc:8001", "10.0.0.9:8001", "[fd00::3]:8001"], resolve
    ) == ["10.0.0.7:8001", "10.0.0.9:8001", "[fd00::3]:8001"]
    with pytest.raises(ValueError, match="host:port"):
        promote.replica_addresses(["triton-replicas"], resolve)


def test_a_replica_that_did_not_load_is_reported_by_name() -> None:
    results: dict[str, list[str] | str] = {
        "10.0.0.7:8001": ["3"],
        "10.0.0.9:8001": "InferenceServerException: connection refused",
        "10.0.0.11:8001": [],
    }
    assert promote.failed_replicas(results) == {
        "10.0.0.9:8001": "InferenceServerException: connection refused",
        "10.0.0.11:8001": "no version is ready",
    }
    assert promote.failed_replicas({"10.0.0.7:8001": ["3"]}) == {}


def test_a_dual_stack_name_counts_each_replica_once() -> None:
    import socket

    resolve = _resolver(
        {
            "triton-replicas": [
                (socket.AF_INET6, "fd00::7"),
                (socket.AF_INET, "10.0.0.7"),
                (socket.AF_INET6, "fd00::9"),
                (socket.AF_INET, "10.0.0.9"),
            ]
        }
    )
    assert promote.replica_addresses(["triton-replicas:8001"], resolve) == [
        "10.0.0.7:8001",
        "10.0.0.9:8001",
    ]


def test_a_replica_still_serving_another_version_counts_as_failed() -> None:
    results: dict[str, list[str] | str] = {"a:8001": ["3"], "b:8001": ["2"]}
    assert promote.failed_replicas(results, expected=3) == {
        "b:8001": "serves versions ['2'], not 3"
    }
    assert promote.failed_replicas(results) == {}


@pytest.mark.parametrize(
    "cid", ["../../etc", "/tmp", "guard-../../x", ".hidden", "guard-run1/../../model_repo"]
)
def test_approving_or_rejecting_touches_only_staged_candidates(tmp_path: Path, cid: str) -> None:
    """The id comes from a command line: anything but a staged candidate's id is refused
    before a file is touched (every run directory has a report.json too)."""
    model_dir = tmp_path / "repo" / "guard"
    (model_dir / "1").mkdir(parents=True)
    victim = tmp_path / "x"
    victim.mkdir()
    (victim / "report.json").write_text('{"serving_version": 1}')
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    promote.stage(model_dir, ckpt, {"serving_version": 1, "reason": "ok"}, "run1")
    for act in (promote.reject, lambda d, c: promote.approve(d, c, "ann")):
        with pytest.raises(ValueError, match="no staged candidate"):
            act(model_dir, cid)
    assert victim.exists() and list(promote.staged(model_dir)) == ["guard-run1"]
