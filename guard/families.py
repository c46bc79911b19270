"""Which Llama Guard generation a checkpoint is, read from its files at load.

A checkpoint served in another generation's prompt format answers garbage (an
LG3 model prompted in ``lg1`` flagged every turn as a parse error), so the
format and the default policy follow the checkpoint unless the operator sets
them. The evidence, strongest first:

1. the guardstream manifest's ``prompt_format`` (models this project trained);
2. the chat template (``tokenizer_config.json``'s ``chat_template``, or
   ``chat_template.jinja`` / ``chat_template.json``): each generation's official
   template has text no other one has;
3. ``config.json``: a Llama 4 architecture; the Llama 2 vocabulary (32,000) of
   Llama Guard 1; within the Llama 3 vocabulary, 16 layers of width 2,048 (3 1B)
   and an 8,192-token context (2) against 3 8B.

Pure file reading: no torch, no tokenizer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.prompt import PromptFormat
from guard.taxonomy import (
    LLAMA_GUARD_1,
    LLAMA_GUARD_2,
    LLAMA_GUARD_3,
    LLAMA_GUARD_3_1B,
    LLAMA_GUARD_4,
)

#: The built-in policy each format was trained with.
POLICY_OF: dict[PromptFormat, str] = {
    PromptFormat.LG1: LLAMA_GUARD_1.id,
    PromptFormat.LG2: LLAMA_GUARD_2.id,
    PromptFormat.LG3: LLAMA_GUARD_3.id,
    PromptFormat.LG3_1B: LLAMA_GUARD_3_1B.id,
    PromptFormat.LG4: LLAMA_GUARD_4.id,
}

MANIFEST = "guardstream-model.json"
LLAMA2_VOCAB = 32_000
LLAMA3_VOCAB = 128_256


@dataclass(frozen=True, slots=True)
class Detected:
    format: PromptFormat
    #: What decided it, for the load log and error messages.
    evidence: str

    @property
    def policy_id(self) -> str:
        return POLICY_OF[self.format]

    @property
    def from_manifest(self) -> bool:
        """Recorded by guardstream when it trained the model (not read from its files)."""
        return self.evidence.startswith(MANIFEST)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def chat_template(checkpoint: Path) -> str:
    """The checkpoint's chat template text, or ""."""
    jinja = checkpoint / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name, key in (
        ("chat_template.json", "chat_template"),
        ("tokenizer_config.json", "chat_template"),
    ):
        value = _json(checkpoint / name).get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list):  # named templates: [{"name", "template"}]
            return "\n".join(str(t.get("template", "")) for t in value if isinstance(t, dict))
    return ""


def format_of_template(template: str) -> PromptFormat | None:
    """The format whose official chat template ``template`` is, if any."""
    if "Task: Check if there is unsafe content" not in template:
        return None
    if "<|header_start|>" in template:
        return PromptFormat.LG4
    if "<|start_header_id|>" in template:
        # 3 1B's template lists thirteen categories; 3 8B's adds S14.
        if "S14" not in template:
            return PromptFormat.LG3_1B
        return PromptFormat.LG3
    if "[INST]" in template:
        return PromptFormat.LG1 if "O1: Violence and Hate" in template else PromptFormat.LG2
    return None


def format_of_config(config: dict[str, Any]) -> PromptFormat | None:
    """The format a checkpoint's ``config.json`` points at, if it points at one."""
    arch = " ".join(map(str, config.get("architectures") or []))
    if config.get("model_type") == "llama4" or "Llama4" in arch:
        return PromptFormat.LG4
    if "Llama" not in arch and config.get("model_type") != "llama":
        return None
    vocab = config.get("vocab_size")
    if vocab == LLAMA2_VOCAB:
        return PromptFormat.LG1
    if vocab != LLAMA3_VOCAB:
        return None
    if config.get("hidden_size") == 2048 and config.get("num_hidden_layers") == 16:
        return PromptFormat.LG3_1B
    if config.get("max_position_embeddings") == 8192:
        return PromptFormat.LG2
    return PromptFormat.LG3


def format_for(checkpoint: Path, configured: PromptFormat | None) -> PromptFormat:
    """The format in force: the configured one, else the checkpoint's, else ``lg1``."""
    if configured is not None:
        return configured
    found = detect(checkpoint)
    return found.format if found else PromptFormat.LG1


def write_format(checkpoint: Path, fmt: PromptFormat) -> None:
    """Record the format a model was trained in, in its guardstream manifest."""
    path = checkpoint / MANIFEST
    data = _json(path) or {"kind": "causal-lm"}
    data["prompt_format"] = str(fmt)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def detect(checkpoint: Path) -> Detected | None:
    """The checkpoint's generation, or None when nothing in it says."""
    manifest = _json(checkpoint / MANIFEST).get("prompt_format")
    if manifest:
        return Detected(PromptFormat(manifest), f"{MANIFEST} prompt_format={manifest}")
    by_template = format_of_template(chat_template(checkpoint))
    if by_template is not None:
        return Detected(by_template, "its chat template")
    by_config = format_of_config(_json(checkpoint / "config.json"))
    if by_config is not None:
        return Detected(by_config, "config.json (architecture, vocabulary, size)")
    return None
