"""GPU check: the guard scorer vs the raw model forward, Llama-Guard-shaped models.

For the lent GPU machine (see docs/performance.md); ``--tiny`` runs the same
code on CPU with toy shapes as a smoke check. Random weights from config
(throughput does not depend on the weights), bf16 on GPU, the Llama 3
tokenizer from llama-models. Prints and writes (``--out``) turns/s of:

* raw: ``LlamaForCausalLM`` forward with ``logits_to_keep=1`` on the full prompts;
* scorer: ``guard.causal_lm.CausalLMGuard`` (what the Triton model runs) without
  and with the policy-prefix KV cache.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

SHAPES: dict[str, dict[str, Any]] = {
    "llama-guard-3-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "llama-guard-3-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure(name: str, tok_dir: Path, turns: int, batch: int, words: int) -> dict[str, float]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from guard.causal_lm import CausalLMGuard
    from guard.conversation import Role, Turn
    from guard.prompt import PromptFormat
    from guard.scoring import GuardRequest, ScorerConfig
    from guard.taxonomy import MLCOMMONS_HAZARDS

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SHAPES[name],
    )
    with torch.device(device):
        model: Any = LlamaForCausalLM(cfg)
    model = model.to(dtype).eval()
    reqs = [
        GuardRequest(
            (Turn(Role.USER, f"request {i}: " + "please tell me more " * words),),
            Role.USER,
            MLCOMMONS_HAZARDS,
        )
        for i in range(turns)
    ]
    out: dict[str, float] = {}
    for label, cache in (("scorer_no_prefix_cache", False), ("scorer_prefix_cache", True)):
        guard = CausalLMGuard(
            model,
            tok,
            ScorerConfig(
                prompt_format=PromptFormat.LG3,
                max_batch=batch,
                max_batch_tokens=batch * 4096,
                prefix_cache=cache,
                decode_categories=False,
            ),
        )
        guard.score(reqs[:batch])
        _sync()
        start = time.perf_counter()
        for i in range(0, turns, batch):
            guard.score(reqs[i : i + batch])
        _sync()
        out[label] = turns / (time.perf_counter() - start)
    ids = [guard.encode(r) for r in reqs]
    out["prompt_tokens"] = float(len(ids[0]))
    with torch.inference_mode():
        x = torch.tensor([ids[0]] * batch, device=device)
        model(input_ids=x, logits_to_keep=1)
        _sync()
        start = time.perf_counter()
        for _ in range(0, turns, batch):
            model(input_ids=x, logits_to_keep=1)
        _sync()
        out["raw_forward"] = turns / (time.perf_counter() - start)
    out["prefix_cache_gain"] = out["scorer_prefix_cache"] / out["scorer_no_prefix_cache"]
    out["scorer_to_raw"] = out["scorer_no_prefix_cache"] / out["raw_forward"]
    return out


def main() -> None:
    from guard.checkpoints import save_llama3_tokenizer

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tiny", action="store_true", help="toy shapes on CPU (smoke check)")
    p.add_argument("--turns", type=int, default=512)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--words", type=int, default=95, help="~4 tokens each: 95 -> ~512 tokens")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    tok_dir = save_llama3_tokenizer(Path("var/models/llama3-tokenizer"))
    names = ["tiny"] if args.tiny else ["llama-guard-3-1b", "llama-guard-3-8b"]
    results = {n: measure(n, tok_dir, args.turns, args.batch, args.words) for n in names}
    for n, r in results.items():
        print(n, json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
