"""A Llama Guard 3 checkpoint served as a user brings it: one setting.

The checkpoint is tests/tiny_guards.py's: the real Llama 3 tokenizer, Meta's LG3 chat
template, no guardstream manifest, and weights trained in this session to answer by the
policy in its prompt. A wrong prompt format, policy or category list gives other answers
(or parse errors), so right verdicts mean the checkpoint was served as Meta's would be.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from guard.causal_lm import CausalLMGuard
from guard.prompt import PromptFormat
from guard.scoring import GuardRequest
from guard.taxonomy import LLAMA_GUARD_3
from tests.conftest import ROOT
from tests.streaming import up_environment
from tests.tiny_guards import SAMPLE_LABELS, sample_conversations

pytestmark = pytest.mark.integration

VERDICT_LINE = re.compile(
    r"^(?P<verdict>SAFE|UNSAFE) +p=(?P<p>\d\.\d{3}) (?P<role>user |agent) "
    r"(?P<conv>demo-[a-z]+)-\w+#(?P<index>\d+)(?: \[(?P<cats>[^\]]*)\])?(?P<rest>.*)$",
    re.MULTILINE,
)


def test_guardstream_up_serves_a_llama_guard_3_checkpoint_named_by_one_variable(
    tiny_lg3: Path, tmp_path: Path
) -> None:
    """Done-when of issue 16: only GUARDSTREAM_MODEL_CHECKPOINT is set (the other variables
    only move the ports off the defaults so that the test cannot meet another stack)."""
    env, _ = up_environment(tmp_path, tiny_lg3)
    assert not [k for k in env if k.startswith("GUARDSTREAM_POLICY__")]
    out = subprocess.run(
        [sys.executable, "-m", "guardstream_cli.main", "up", "--exit-after-samples"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [m.groupdict() for m in VERDICT_LINE.finditer(out.stdout)]
    assert len(lines) == 10, out.stdout
    assert not [m for m in lines if "PARSE ERROR" in m["rest"]], out.stdout
    by_turn = {(m["conv"], int(m["index"])): m for m in lines}
    # What the checkpoint answers in process, prompted by its own chat template (the load
    # checks guardstream's prompt against it) under its own policy: the served verdicts
    # must be these, categories included.
    guard = CausalLMGuard.load(tiny_lg3)
    assert (guard.format, guard.default_policy_id) == (PromptFormat.LG3, LLAMA_GUARD_3.id)
    names = {c.code: c.name for c in LLAMA_GUARD_3.categories}
    for conv, turns in sample_conversations().items():
        for i, turn in enumerate(turns):
            (want,) = guard.score([GuardRequest(turns[: i + 1], turn.role, LLAMA_GUARD_3)])
            got = by_turn[(conv, i)]
            assert got["verdict"] == ("UNSAFE" if want.unsafe else "SAFE"), (got, want)
            assert float(got["p"]) == pytest.approx(want.p_unsafe, abs=2e-3), (got, want)
            # Llama Guard 3's codes with the names of its own template, not LG1's O1-O6.
            assert (got["cats"] or "") == ", ".join(f"{c} {names[c]}" for c in want.codes)
    # And those are the verdicts it was trained to give (safe or unsafe).
    for turn, codes in SAMPLE_LABELS.items():
        assert (by_turn[turn]["verdict"] == "UNSAFE") == (codes is not None), by_turn[turn]
