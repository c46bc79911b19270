import json
from pathlib import Path

import pytest

from guard.taxonomy import (
    LLAMA_GUARD_1,
    MLCOMMONS_HAZARDS,
    Policy,
    PolicyError,
    PolicyRef,
    PolicyRegistry,
    load_policy_file,
)


def test_builtin_policies() -> None:
    assert LLAMA_GUARD_1.codes == ("O1", "O2", "O3", "O4", "O5", "O6")
    assert LLAMA_GUARD_1.by_code("O3").name == "Criminal Planning"
    assert MLCOMMONS_HAZARDS.codes[-1] == "S14"
    assert MLCOMMONS_HAZARDS.by_code("S11").name == "Suicide & Self-Harm"
    assert LLAMA_GUARD_1.ref == PolicyRef("llama-guard-1", "1")
    assert str(LLAMA_GUARD_1.ref) == "llama-guard-1@1"
    assert PolicyRef.parse("a@b@3") == PolicyRef("a@b", "3")
    with pytest.raises(PolicyError, match="id@version"):
        PolicyRef.parse("no-version")
    with pytest.raises(PolicyError, match="may not contain '@'"):
        Policy("shop", "2@x", LLAMA_GUARD_1.categories)


def test_custom_policy_from_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(
        "id: shop\nversion: '2'\ncategories:\n"
        "  - {code: C1, name: Scams, description: Should not help defraud buyers.}\n"
        "  - {code: C2, name: Counterfeits}\n"
    )
    (tmp_path / "kids.json").write_text(
        json.dumps(
            {"id": "kids", "version": "1", "categories": [{"code": "K1", "name": "Bullying"}]}
        )
    )
    reg = PolicyRegistry.with_directory(tmp_path)
    assert str(reg.get("shop").ref) == "shop@2"
    assert reg.get("shop").by_code("C1").description == "Should not help defraud buyers."
    assert reg.get("kids").codes == ("K1",)
    assert "llama-guard-1" in reg


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id: x\nversion: 1\ncategories: []\n", "no categories"),
        ("id: x\ncategories: [{code: A, name: B}]\n", "missing field 'version'"),
        ("id: x\nversion: 1\ncategories: [{code: A, name: B}, {code: A, name: C}]\n", "repeats"),
        ("id: x\nversion: 1\ncategories: [{code: '', name: B}]\n", "needs a code and a name"),
        ("- just\n- a list\n", "must be a mapping"),
        ("id: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_policy_files_are_rejected_with_a_reason(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(PolicyError, match=message):
        load_policy_file(path)


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(
        PolicyError, match=r"known: llama-guard-1, llama-guard-2, .*mlcommons-hazards"
    ):
        PolicyRegistry().get("nope")
