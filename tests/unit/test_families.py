"""A checkpoint's Llama Guard generation is read from its files, and its chat template
is held to the prompts guardstream renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard.causal_lm import CausalLMGuard
from guard.checkpoints import build_tiny_llama
from guard.conversation import Role, Turn
from guard.families import MANIFEST, detect, format_of_config, format_of_template
from guard.prompt import PromptFormat
from guard.scoring import GuardRequest, ScorerConfig
from guard.taxonomy import LLAMA_GUARD_3

FIXTURES = Path(__file__).parents[1] / "fixtures" / "llama_guard"
#: Official Hugging Face chat templates, transcribed (sources in FIXTURES/*.md).
TEMPLATES: dict[str, str] = json.loads((FIXTURES / "chat_templates.json").read_text())


@pytest.mark.parametrize(
    ("family", "fmt"),
    [
        ("lg1", PromptFormat.LG1),
        ("lg2", PromptFormat.LG2),
        ("lg3_8b", PromptFormat.LG3),
        ("lg3_1b", PromptFormat.LG3_1B),
    ],
)
def test_each_official_template_names_its_format(family: str, fmt: PromptFormat) -> None:
    assert format_of_template(TEMPLATES[family]) is fmt


def test_llama_guard_4_is_told_by_its_headers() -> None:
    rendered = (FIXTURES / "lg4_example_user.txt").read_text()
    assert format_of_template(rendered) is PromptFormat.LG4


def test_a_template_that_is_not_llama_guard_says_nothing() -> None:
    base = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}{% endfor %}"
    assert format_of_template(base) is None
    assert format_of_template("") is None


def _llama(
    vocab: int, hidden: int = 4096, layers: int = 32, ctx: int = 131072
) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "max_position_embeddings": ctx,
    }


def test_config_shapes_name_the_generation() -> None:
    assert format_of_config(_llama(32_000, ctx=4096)) is PromptFormat.LG1
    assert format_of_config(_llama(128_256, ctx=8192)) is PromptFormat.LG2
    assert format_of_config(_llama(128_256)) is PromptFormat.LG3
    assert format_of_config(_llama(128_256, hidden=2048, layers=16)) is PromptFormat.LG3_1B
    llama4 = {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4"}
    assert format_of_config(llama4) is PromptFormat.LG4
    assert format_of_config({"architectures": ["BertModel"], "vocab_size": 30522}) is None
    assert format_of_config(_llama(49_152)) is None  # a Llama of another vocabulary


def test_the_manifest_beats_the_template_beats_the_config(tmp_path: Path) -> None:
    assert detect(tmp_path) is None
    (tmp_path / "config.json").write_text(json.dumps(_llama(32_000)))
    assert detect(tmp_path).format is PromptFormat.LG1  # type: ignore[union-attr]
    (tmp_path / "chat_template.jinja").write_text(TEMPLATES["lg3_8b"])
    found = detect(tmp_path)
    assert found is not None and found.format is PromptFormat.LG3
    assert found.policy_id == "llama-guard-3" and "chat template" in found.evidence
    (tmp_path / MANIFEST).write_text(json.dumps({"kind": "causal-lm", "prompt_format": "lg2"}))
    assert detect(tmp_path).format is PromptFormat.LG2  # type: ignore[union-attr]


def _with_template(out: Path, tokenizer_dir: Path, template: str) -> Path:
    """A tiny Llama 3-vocabulary checkpoint that carries ``template`` as its chat template
    and nothing else that names a format (no manifest)."""
    from transformers import AutoTokenizer

    build_tiny_llama(out, tokenizer_dir, seed=3)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.chat_template = template
    tok.save_pretrained(str(out))
    assert not (out / MANIFEST).exists()
    return out


@pytest.mark.parametrize(
    ("family", "fmt", "policy"),
    [
        ("lg1", PromptFormat.LG1, "llama-guard-1"),
        ("lg2", PromptFormat.LG2, "llama-guard-2"),
        ("lg3_8b", PromptFormat.LG3, "llama-guard-3"),
        ("lg3_1b", PromptFormat.LG3_1B, "llama-guard-3-1b"),
    ],
)
def test_a_llama_guard_checkpoint_is_served_in_its_own_format(
    family: str, fmt: PromptFormat, policy: str, llama3_tokenizer_dir: Path, tmp_path: Path
) -> None:
    """The official template, rendered by transformers at load, is the prompt guardstream
    renders (else the load fails); with no setting the model gets its format and policy."""
    ckpt = _with_template(tmp_path / family, llama3_tokenizer_dir, TEMPLATES[family])
    guard = CausalLMGuard.load(ckpt)
    assert guard.format is fmt
    assert guard.default_policy_id == policy


def test_a_llama_guard_3_prompt_ends_where_the_verdict_starts(
    llama3_tokenizer_dir: Path, tmp_path: Path
) -> None:
    ckpt = _with_template(tmp_path / "lg3", llama3_tokenizer_dir, TEMPLATES["lg3_8b"])
    guard = CausalLMGuard.load(ckpt)
    assert (guard.safe_id, guard.unsafe_id) == (19193, 39257)  # Llama 3 "safe", "unsafe"
    ids = guard.encode(GuardRequest((Turn(Role.USER, "hello"),), Role.USER, LLAMA_GUARD_3))
    text = guard.tok.decode(ids)
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTask:")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    # An operator's setting still wins over detection.
    lg1 = _with_template(tmp_path / "plain", llama3_tokenizer_dir, "")
    assert CausalLMGuard.load(lg1).format is PromptFormat.LG2  # config: 8,192 context
    assert CausalLMGuard.load(lg1, ScorerConfig(prompt_format=PromptFormat.LG3)).format is (
        PromptFormat.LG3
    )


def test_a_chat_template_that_differs_from_the_format_fails_the_load(
    llama3_tokenizer_dir: Path, tmp_path: Path
) -> None:
    drifted = TEMPLATES["lg3_8b"].replace("according our", "according to our")
    ckpt = _with_template(tmp_path / "drift", llama3_tokenizer_dir, drifted)
    with pytest.raises(ValueError, match=r"differ at character \d+: template 'to our safety"):
        CausalLMGuard.load(ckpt)
    wrong = _with_template(tmp_path / "wrong", llama3_tokenizer_dir, TEMPLATES["lg3_8b"])
    with pytest.raises(ValueError, match="does not render format lg1's prompt"):
        CausalLMGuard.load(wrong, ScorerConfig(prompt_format=PromptFormat.LG1))


def test_a_model_this_project_trained_is_held_to_its_recorded_format(
    llama3_tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Fine-tuning keeps the base's chat template and records the format it trained in:
    the record wins, and the base's template does not fail the load."""
    from guard.families import write_format

    ckpt = _with_template(tmp_path / "ft", llama3_tokenizer_dir, TEMPLATES["lg3_8b"])
    write_format(ckpt, PromptFormat.LG1)
    guard = CausalLMGuard.load(ckpt)
    assert guard.format is PromptFormat.LG1 and guard.default_policy_id == "llama-guard-1"


def test_a_llama_guard_4_shaped_checkpoint_is_detected_and_scores(
    llama3_tokenizer_dir: Path, tmp_path: Path
) -> None:
    """Llama 4 nests its decoder differently from Llama 2/3 (its base_model is the LM)."""
    import torch
    from transformers import AutoTokenizer, Llama4ForCausalLM, Llama4TextConfig

    from guard.taxonomy import LLAMA_GUARD_4

    tok = AutoTokenizer.from_pretrained(str(llama3_tokenizer_dir))
    torch.manual_seed(0)
    cfg = Llama4TextConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        intermediate_size_mlp=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        num_local_experts=1,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    Llama4ForCausalLM(cfg).save_pretrained(str(tmp_path))
    tok.save_pretrained(str(tmp_path))
    req = GuardRequest((Turn(Role.USER, "hello there"),), Role.USER, LLAMA_GUARD_4)
    cached = CausalLMGuard.load(tmp_path)
    assert cached.format is PromptFormat.LG4 and cached.default_policy_id == LLAMA_GUARD_4.id
    plain = CausalLMGuard.load(tmp_path, ScorerConfig(prefix_cache=False))
    (a,), (b,) = cached.score([req]), plain.score([req])
    assert 0.0 <= a.p_unsafe <= 1.0 and a.p_unsafe == pytest.approx(b.p_unsafe, abs=1e-5)
