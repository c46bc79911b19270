"""``guardstream up``: everything on one machine, with sample traffic.

Starts the embedded broker, the local tritonserver with the default model,
the worker (as a child process), sends the sample conversations and prints
each verdict as it arrives. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from guard.conversation import parse_role
from guard.events import ChatTurn, now_rfc3339
from guard.settings import Settings
from stream_app.launchers.process import ManagedProcess

if TYPE_CHECKING:
    from stream_app.client import GuardstreamClient

SAMPLES = Path(__file__).parent / "samples" / "conversations.jsonl"
REPLY_SAMPLES = Path(__file__).parent / "samples" / "streamed_replies.jsonl"
#: Tokens per chunk, and seconds between chunks, of a sample reply "being generated".
SAMPLE_CHUNK_TOKENS = 4
SAMPLE_CHUNK_GAP_S = 0.02


def sample_turns(path: Path = SAMPLES, run_id: str | None = None) -> list[ChatTurn]:
    """The sample conversations as chat-turn events with fresh ids for this run."""
    run_id = run_id or uuid.uuid4().hex[:8]
    index: dict[str, int] = {}
    turns = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        conv = f"{row['conversation_id']}-{run_id}"
        i = index.get(conv, 0)
        index[conv] = i + 1
        turns.append(
            ChatTurn(
                event_id=f"{conv}-{i}",
                conversation_id=conv,
                turn_index=i,
                role=parse_role(row["role"]),
                content=row["content"],
                timestamp=now_rfc3339(),
            )
        )
    return turns


def format_verdict(v: dict[str, object], content: str | None) -> str:
    cats = ", ".join(f"{c['code']} {c['name']}" for c in v["categories"])  # type: ignore[attr-defined]
    flags = []
    if v["parse_error"]:
        flags.append("PARSE ERROR")
    if v["review_reasons"]:
        flags.append("-> review")
    text = "" if content is None else f'  "{content[:70]}{"..." if len(content) > 70 else ""}"'
    return (
        f"{str(v['verdict']).upper():6} p={float(v['p_unsafe']):.3f} "  # type: ignore[arg-type]
        f"{v['role']:5} {v['conversation_id']}#{v['turn_index']}"
        f"{' [' + cats + ']' if cats else ''}{' ' + ' '.join(flags) if flags else ''}{text}"
    )


@contextlib.contextmanager
def local_services(s: Settings, with_worker: bool = True) -> Iterator[dict[str, ManagedProcess]]:
    """Broker, tritonserver (default model) and, optionally, the worker."""
    from stream_app.launchers.broker import broker_process
    from stream_app.launchers.model import local_triton, resolve_local_model
    from stream_app.launchers.worker import worker_process
    from stream_app.topics import create_topics

    s = s.for_local_stack()
    model = resolve_local_model(s.local.data_dir)
    print(f"model: {model.description}", flush=True)
    procs: dict[str, ManagedProcess] = {}
    with contextlib.ExitStack() as stack:
        procs["broker"] = stack.enter_context(
            broker_process(s.local.data_dir / "broker", s.local.broker_port)
        )
        print(f"broker: 127.0.0.1:{s.local.broker_port}", flush=True)
        procs["triton"] = stack.enter_context(local_triton(s, model))
        print(f"triton: grpc 127.0.0.1:{s.local.triton_grpc_port}", flush=True)
        asyncio.run(create_topics(s))
        if with_worker:
            procs["worker"] = stack.enter_context(
                worker_process(s, s.local.data_dir / "worker.log")
            )
            print(
                f"worker: metrics http://127.0.0.1:{s.worker.web_port}/metrics "
                f"(log {s.local.data_dir / 'worker.log'})",
                flush=True,
            )
        yield procs


async def show_verdicts(s: Settings, turns: list[ChatTurn]) -> int:
    """Send ``turns`` and print each one's verdict as it arrives (0: all arrived)."""
    from stream_app.kafka_io import follow, produce

    by_id = {t.event_id: t for t in turns}
    await produce(s, [(t.conversation_id.encode(), t.to_json()) for t in turns])
    print(f"sent {len(turns)} sample turns to {s.topics.input}; verdicts:", flush=True)
    seen: set[str] = set()
    async for v in follow(s, s.topics.verdicts, timeout_s=300):
        eid = str(v.get("event_id"))
        turn = by_id.get(eid)
        if turn is not None:
            print(format_verdict(v, turn.content), flush=True)
            seen.add(eid)
        if seen >= set(by_id):
            break
    return 0 if seen >= set(by_id) else 1


async def stream_reply(
    client: GuardstreamClient, row: dict[str, str], run_id: str, timeout_s: float = 120
) -> str:
    """Stream one sample reply through ``client`` in hold-back mode as a model would
    generate it, and say what the user saw."""
    from guard.conversation import Role, Turn
    from guard.reply_stream import tokens
    from stream_app.client import ReplyStopped

    reply = row["reply"]
    guard = client.reply(
        f"reply-{row['id']}-{run_id}",
        [Turn(Role.USER, row["user"])],
        stream_id=f"{row['id']}-{run_id}",
    )
    spans = tokens(reply)
    shown = ""
    sent = 0
    try:
        for i in range(0, len(spans), SAMPLE_CHUNK_TOKENS):
            end = spans[min(i + SAMPLE_CHUNK_TOKENS, len(spans)) - 1][1]
            shown += await guard.write(reply[sent:end])
            sent = end
            await asyncio.sleep(SAMPLE_CHUNK_GAP_S)
        shown += await guard.close(timeout_s)
    except ReplyStopped as stop:
        v = stop.verdict
        cats = ", ".join(f"{c['code']} {c['name']}" for c in v.get("categories", []))
        seen = "none" if len(shown) <= int(v["start"]) else "part"
        return (
            f"STOPPED streamed reply {row['id']}: window {v['window']} unsafe"
            f"{' [' + cats + ']' if cats else ''}; the user saw {len(shown)} of the"
            f" {sent} characters generated (of {len(reply)}), {seen} of the unsafe window"
        )
    final = guard.state.final or {}
    return (
        f"{str(final.get('verdict', '?')).upper()} streamed reply {row['id']}: the user saw"
        f" {len(shown)} of {len(reply)} characters, released window by window"
    )


async def show_streamed_replies(s: Settings, path: Path = REPLY_SAMPLES) -> int:
    """Each sample reply streamed through the worker, judged while it grows."""
    from stream_app.client import GuardstreamClient

    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    run_id = uuid.uuid4().hex[:8]
    print(f"streaming {len(rows)} sample replies to {s.topics.reply_chunks} (hold-back):")
    async with GuardstreamClient(s) as client:
        for row in rows:
            try:
                print(await stream_reply(client, row, run_id), flush=True)
            except TimeoutError:
                print(f"NO VERDICT for streamed reply {row['id']}", flush=True)
                return 1
    return 0


async def follow_new_verdicts(s: Settings) -> int:
    """Print every verdict written from now on (until Ctrl-C)."""
    from stream_app.kafka_io import follow

    print(f"following new verdicts on {s.topics.verdicts} (Ctrl-C stops):", flush=True)
    async for v in follow(s, s.topics.verdicts, from_beginning=False):
        print(format_verdict(v, None), flush=True)
    return 0


@contextlib.contextmanager
def review_console(s: Settings) -> Iterator[ManagedProcess]:
    """The review console for a local run: one account, ``reviewer``, with a fresh
    password each run (printed; the accounts file is readable by its owner only)."""
    from review_console.serve import local_account
    from stream_app.launchers.console import console_process

    accounts = s.local.data_dir / "console" / "accounts.json"
    password = local_account(accounts)
    s = s.model_copy(update={"console": s.console.model_copy(update={"accounts_file": accounts})})
    with console_process(s, s.local.data_dir / "console.log") as proc:
        print(
            f"review console: http://{s.console.host}:{s.console.port}/"
            f" (sign in as reviewer, password {password})",
            flush=True,
        )
        yield proc


def run_up(s: Settings, exit_after_samples: bool) -> int:
    s = s.for_local_stack()
    with local_services(s), review_console(s):
        try:
            rc = asyncio.run(show_verdicts(s, sample_turns()))
            rc = rc or asyncio.run(show_streamed_replies(s))
            if not exit_after_samples and rc == 0:
                rc = asyncio.run(follow_new_verdicts(s))
        except KeyboardInterrupt:
            rc = 0
        print("stopping...", flush=True)
    return rc
