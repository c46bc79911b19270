"""What an unsafe turn costs against a safe one (the category line is decoded only for
unsafe turns), with batched decoding and with one ``generate`` per unsafe turn (how
the scorer decoded before), in one run.

    python -m bench.unsafe_turns [--shape small|tiny|llama-guard-3-1b|llama-guard-3-8b]
                                 [--turns 64] [--batch 32] [--words 95]

A random Llama-Guard-shaped model (bench.gpu's shapes) whose output head writes
only ``safe``/``unsafe``, so that every answer runs the full ``max_answer_tokens``
(20) decoding steps: the worst case (a real answer, ``unsafe\\nS1``, stops after
about four). The scorer runs with the policy-prefix KV cache, prompt format lg3,
the Llama 3 tokenizer. The same turns are scored three ways:

* safe: threshold 1.0, so no turn decodes a category line;
* unsafe, batched: threshold 0.0, every turn decodes, all rows of a pass together
  from its KV cache (``CausalLMGuard`` as served);
* unsafe, one generate per turn: the scoring pass, then ``model.generate`` over
  each unsafe turn's whole prompt (the previous scorer).

Prints turns/s of each and the ratios to safe; the target is unsafe <= ~2x safe.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bench.gpu import SHAPES, _sync

SHAPES_HERE: dict[str, dict[str, Any]] = {
    **SHAPES,
    "small": dict(
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=4,
    ),
}


def measure(shape: str, turns: int, batch: int, words: int) -> dict[str, float]:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from guard.causal_lm import CausalLMGuard, answer_token_ids
    from guard.checkpoints import save_llama3_tokenizer
    from guard.conversation import Role, Turn
    from guard.prompt import PromptFormat
    from guard.scoring import GuardRequest, ScorerConfig
    from guard.taxonomy import LLAMA_GUARD_3

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(
        str(save_llama3_tokenizer(Path("var/models/llama3-tokenizer")))
    )
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **SHAPES_HERE[shape],
    )
    torch.manual_seed(0)
    with torch.device(device):
        model: Any = LlamaForCausalLM(cfg)
    safe, unsafe = answer_token_ids(tok, PromptFormat.LG3)
    with torch.no_grad():  # answers only 'safe'/'unsafe': every decode runs to the limit
        w = torch.randn(cfg.hidden_size, device=device) * 0.01  # small: p never saturates
        model.lm_head.weight.zero_()
        model.lm_head.weight[safe], model.lm_head.weight[unsafe] = w, -w  # one logit >= 0
    model = model.to(dtype).eval()
    reqs = [
        GuardRequest(
            (Turn(Role.USER, f"request {i}: " + "please tell me more " * words),),
            Role.USER,
            LLAMA_GUARD_3,
        )
        for i in range(turns)
    ]

    def guard(threshold: float) -> CausalLMGuard:
        return CausalLMGuard(
            model,
            tok,
            ScorerConfig(
                prompt_format=PromptFormat.LG3,
                threshold=threshold,
                max_batch=batch,
                max_batch_tokens=batch * 4096,
            ),
        )

    def timed(run: Any) -> float:
        run(reqs[:batch])  # warm-up (and the prefix cache)
        _sync()
        start = time.perf_counter()
        for i in range(0, turns, batch):
            run(reqs[i : i + batch])
        _sync()
        return turns / (time.perf_counter() - start)

    safe_guard, unsafe_guard = guard(1.0), guard(0.0)
    assert not any(r.unsafe for r in safe_guard.score(reqs[:2]))
    assert all(r.unsafe for r in unsafe_guard.score(reqs[:2]))

    def one_generate_each(batch_reqs: list[GuardRequest]) -> None:
        safe_guard.score(batch_reqs)  # the scoring pass
        for r in batch_reqs:
            prompt = torch.tensor([[*safe_guard.encode(r), unsafe]], device=device)
            model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=safe_guard.cfg.max_answer_tokens,
                do_sample=False,
                pad_token_id=safe_guard.pad_id,
            )

    out = {
        "safe": timed(safe_guard.score),
        "unsafe_batched": timed(unsafe_guard.score),
        "unsafe_one_generate_each": timed(one_generate_each),
        "prompt_tokens": float(len(safe_guard.encode(reqs[0]))),
    }
    out["unsafe_batched_cost_x_safe"] = out["safe"] / out["unsafe_batched"]
    out["unsafe_one_generate_cost_x_safe"] = out["safe"] / out["unsafe_one_generate_each"]
    return out


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small", choices=sorted(SHAPES_HERE))
    p.add_argument("--turns", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--words", type=int, default=95, help="~4 tokens each: 95 -> ~512 tokens")
    args = p.parse_args(argv)
    result = measure(args.shape, args.turns, args.batch, args.words)
    print(args.shape, json.dumps({k: round(v, 2) for k, v in result.items()}), flush=True)
    return result


if __name__ == "__main__":
    main()
