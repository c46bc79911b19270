"""The ``guardstream`` command. Subcommands import their parts lazily."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import orjson

from guard.settings import Settings, load_settings


def _wait_for_signal() -> None:
    """Block until Ctrl-C or SIGTERM; then ignore both so that shutdown completes."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def cmd_serve(args: argparse.Namespace, s: Settings) -> int:
    from stream_app.launchers.model import local_triton, resolve_local_model

    model = resolve_local_model(s.local.data_dir)
    print(f"guardstream serve: model {s.triton.model_name!r} = {model.description}", flush=True)
    with local_triton(s, model, args.timeout):
        print(
            f"tritonserver ready: grpc 127.0.0.1:{s.local.triton_grpc_port}, "
            f"http 127.0.0.1:{s.local.triton_http_port} (Ctrl-C stops it)",
            flush=True,
        )
        _wait_for_signal()
    print("tritonserver stopped", flush=True)
    return 0


def _sigterm_as_interrupt() -> None:
    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def cmd_broker(args: argparse.Namespace, s: Settings) -> int:
    from stream_app.launchers.broker import broker_process

    with broker_process(s.local.data_dir / "broker", s.local.broker_port):
        print(
            f"kafka broker ready on 127.0.0.1:{s.local.broker_port} "
            f"(data in {s.local.data_dir / 'broker'}; Ctrl-C stops it)",
            flush=True,
        )
        _wait_for_signal()
    return 0


def cmd_worker(args: argparse.Namespace, s: Settings) -> int:
    from stream_app.worker import run_worker

    return run_worker(s)


def cmd_topics(args: argparse.Namespace, s: Settings) -> int:
    from stream_app.topics import create_topics, topic_names

    created = asyncio.run(create_topics(s))
    for name in topic_names(s):
        print(f"{name}: {'created' if name in created else 'exists'}")
    return 0


def cmd_produce(args: argparse.Namespace, s: Settings) -> int:
    from stream_app.kafka_io import produce, read_turns

    records = read_turns(Path(args.file), s.worker.max_content_bytes, s.kafka.max_record_bytes)
    n = asyncio.run(produce(s, records))
    print(f"sent {n} chat turns to {s.topics.input}", file=sys.stderr)
    return 0


def cmd_follow(args: argparse.Namespace, s: Settings) -> int:
    from stream_app.kafka_io import follow

    topic = {
        "verdicts": s.topics.verdicts,
        "flagged": s.topics.flagged,
        "dlq": s.topics.dlq,
        "reviews": s.topics.reviews,
        "input": s.topics.input,
    }[args.topic]

    async def run() -> None:
        async for event in follow(s, topic, args.count, args.timeout):
            sys.stdout.write(orjson.dumps(event).decode() + "\n")
            sys.stdout.flush()

    _sigterm_as_interrupt()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


def cmd_up(args: argparse.Namespace, s: Settings) -> int:
    from stream_app.local_stack import run_up

    _sigterm_as_interrupt()
    return run_up(s, exit_after_samples=args.exit_after_samples)


def cmd_review(args: argparse.Namespace, s: Settings) -> int:
    from guard.events import ReviewEvent
    from guard.taxonomy import PolicyRegistry
    from stream_app.kafka_io import produce, read_all
    from training.review import pending, review_loop

    async def load() -> tuple[list[bytes], list[bytes]]:
        return await read_all(s, s.topics.flagged), await read_all(s, s.topics.reviews)

    flagged, reviews = asyncio.run(load())
    items = pending(flagged, reviews)[: args.limit]
    print(f"{len(items)} flagged turns to review", flush=True)
    policies = PolicyRegistry.with_directory(s.policy.policy_dir)

    key = s.review.key.get_secret_value().encode() if s.review.key else None

    def record(review: ReviewEvent) -> None:
        if key is not None:
            review = review.signed(key)
        asyncio.run(
            produce(s, [(review.flagged_id.encode(), review.to_json())], topic=s.topics.reviews)
        )

    reviewer = s.review.reviewer or args.reviewer
    n = review_loop(items, policies.get, reviewer, input, print, record)
    print(f"recorded {n} decisions to {s.topics.reviews}", flush=True)
    return 0


def cmd_console(args: argparse.Namespace, s: Settings) -> int:
    if args.hash_password:
        import getpass

        from review_console.auth import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline()
        print(hash_password(password.rstrip("\n")))
        return 0
    from review_console.serve import serve

    serve(s)
    return 0


def cmd_retrain(args: argparse.Namespace, s: Settings) -> int:
    from training.retrain import retrain

    result = retrain(s, reload=not args.no_reload)
    print(
        f"retrain: {result.status}: {result.reason}"
        + (f" -> version {result.new_version}" if result.new_version else ""),
        flush=True,
    )
    # The promotion is done and durable: a replica that missed the reload is reported,
    # but the run succeeded (a failed Job would be retried: another whole retrain).
    _report_replicas(result.replicas, result.new_version)
    return 0


def _report_replicas(results: dict[str, list[str] | str], expected: int | None = None) -> int:
    """Print what each Triton replica serves after a reload; 1 when one did not load
    (or, with ``expected``, does not serve that version)."""
    from training.promote import failed_replicas

    for url, outcome in results.items():
        said = f"serves versions {outcome}" if isinstance(outcome, list) else outcome
        print(f"triton {url}: {said}", flush=True)
    failed = failed_replicas(results, expected)
    if failed:
        print(
            f"{len(failed)} of {len(results)} Triton replicas did not load the model; they "
            "serve their old version until they restart or a reload reaches them",
            file=sys.stderr,
        )
    return 1 if failed else 0


def cmd_rollback(args: argparse.Namespace, s: Settings) -> int:
    from training.promote import reload_replicas, rollback, serving_version

    model_dir = s.local.model_repository / s.triton.model_name
    moved = rollback(model_dir, args.to)
    print(f"archived versions {moved} of {model_dir}", flush=True)
    if args.no_reload:
        return 0
    return _report_replicas(
        reload_replicas(s.triton.control_targets, s.triton.model_name, s.triton.model_control_key),
        serving_version(model_dir),
    )


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "unknown"


def cmd_scenario(args: argparse.Namespace, s: Settings) -> int:
    from training.scenario import run_command

    return run_command(args)


def cmd_promote(args: argparse.Namespace, s: Settings) -> int:

    model_dir = s.local.model_repository / s.triton.model_name
    try:
        return _promote(args, s, model_dir)
    except ValueError as exc:  # an unknown or stale candidate id
        print(f"guardstream promote: {exc}", file=sys.stderr)
        return 2


def _promote(args: argparse.Namespace, s: Settings, model_dir: Path) -> int:
    from training import promote

    if args.approve:
        approver = s.review.reviewer or _login_name()
        version = promote.approve(model_dir, args.approve, approver)
        print(f"approved {args.approve} by {approver}: version {version}", flush=True)
        if args.no_reload:
            return 0
        return _report_replicas(
            promote.reload_replicas(
                s.triton.control_targets, s.triton.model_name, s.triton.model_control_key
            ),
            version,
        )
    if args.reject:
        promote.reject(model_dir, args.reject)
        print(f"rejected {args.reject}", flush=True)
        return 0
    pending = promote.staged(model_dir)
    if not pending:
        print("no candidate awaits approval", flush=True)
    for cid, report in pending.items():
        print(f"{cid}: gated against version {report['serving_version']}: {report['reason']}")
        for check in report.get("checks", []):
            if check["candidate"] is not None and check["serving"] is not None:
                print(
                    f"  {check['rule']}: {check['candidate']:.4f} (serving {check['serving']:.4f})"
                )
    return 0


def cmd_eval(args: argparse.Namespace, s: Settings) -> int:
    from training.evaluate import run_eval
    from training.metrics import table

    def report() -> dict[str, object]:
        return run_eval(
            Path(args.data), s, Path(args.report) if args.report else None, args.concurrency
        )

    if args.triton_url or "GUARDSTREAM_TRITON__URL" in os.environ:
        if args.triton_url:
            s = s.model_copy(
                update={"triton": s.triton.model_copy(update={"url": args.triton_url})}
            )
        result = report()
    else:  # no Triton configured: start the local one with the default model
        from stream_app.launchers.model import local_triton, resolve_local_model

        s = s.for_local_stack()
        model = resolve_local_model(s.local.data_dir)
        print(f"starting the local tritonserver: {model.description}", file=sys.stderr)
        _sigterm_as_interrupt()
        with local_triton(s, model):
            result = report()
    print(table(result, f"{args.data}: {result['n']} scored, {result['n_unreadable']} unreadable"))
    for side in ("user_side", "agent_side"):
        if side in result:
            print(f"  {side}: {result[side]}")
    for row in result["unreadable"][:20]:  # type: ignore[index]
        print(f"  unreadable {row['ref']}: {row['reason']}")
    return 0


def cmd_bench(args: argparse.Namespace, s: Settings) -> int:
    from bench.run import run_bench

    _sigterm_as_interrupt()  # a killed bench still stops its broker, Triton and worker
    run_bench(s, args.turns, Path(args.report) if args.report else None, args.backlog)
    return 0


def cmd_bench_stream(args: argparse.Namespace, s: Settings) -> int:
    from bench.stream_replies import run_stream_bench

    _sigterm_as_interrupt()
    report = run_stream_bench(
        s,
        args.replies,
        args.rate,
        Path(args.report) if args.report else None,
        concurrency=args.concurrency,
    )
    return 0 if report["unsafe"]["unsafe_harm_shown_when_stopped"] == 0 else 1


def cmd_train_default(args: argparse.Namespace, s: Settings) -> int:
    from training.default_model.recipe import build_default_model

    report = build_default_model(Path(args.out), Path(args.splits) if args.splits else None)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    return 0


def cmd_public_splits(args: argparse.Namespace, s: Settings) -> int:
    from training.public_data.splits import write_splits

    summary = write_splits(Path(args.out))
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_settings(args: argparse.Namespace, s: Settings) -> int:
    from guard.settings import settings_markdown

    if args.markdown:
        print(settings_markdown(), end="")
    else:
        print(s.model_dump_json(indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="guardstream", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the local tritonserver on model_repo/")
    serve.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the model to be ready"
    )
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("broker", help="run the local Kafka-protocol broker").set_defaults(
        func=cmd_broker
    )
    sub.add_parser("worker", help="run the moderation worker").set_defaults(func=cmd_worker)
    tp = sub.add_parser("topics", help="create the guardstream topics that do not exist")
    tp.add_argument("action", choices=["create"])
    tp.set_defaults(func=cmd_topics)
    pr = sub.add_parser("produce", help="send chat turns (JSON lines) to the input topic")
    pr.add_argument("file", help="JSONL file of chat-turn events")
    pr.set_defaults(func=cmd_produce)
    fo = sub.add_parser("follow", help="print events of an output topic as JSON lines")
    fo.add_argument(
        "--topic", default="verdicts", choices=["verdicts", "flagged", "dlq", "reviews", "input"]
    )
    fo.add_argument("--count", type=int, default=None, help="stop after N events")
    fo.add_argument("--timeout", type=float, default=None, help="stop after S seconds")
    fo.set_defaults(func=cmd_follow)
    up = sub.add_parser("up", help="run broker, Triton and worker locally with sample traffic")
    up.add_argument(
        "--exit-after-samples",
        action="store_true",
        help="exit once every sample turn has its verdict (default: keep following)",
    )
    up.set_defaults(func=cmd_up)
    rv = sub.add_parser("review", help="review flagged turns in the terminal")
    rv.add_argument(
        "--reviewer",
        default=os.environ.get("USER", "reviewer"),
        help="reviewer id recorded with each decision",
    )
    rv.add_argument("--limit", type=int, default=None, help="review at most N turns")
    rv.set_defaults(func=cmd_review)
    co = sub.add_parser("console", help="the review console in the browser")
    co.add_argument(
        "--hash-password",
        action="store_true",
        help="print the hash of a password (from the terminal or stdin) for an accounts file",
    )
    co.set_defaults(func=cmd_console)
    rt = sub.add_parser("retrain", help="dataset, fine-tune, evaluate, promote (one cycle)")
    rt.add_argument("--no-reload", action="store_true", help="do not ask Triton to load")
    rt.set_defaults(func=cmd_retrain)
    sc = sub.add_parser(
        "scenario",
        help="the review loop end to end: traffic, scripted reviews, retrain (poisoned, honest)",
    )
    sc.add_argument("source", nargs="?", default="stormfront", help="a public source")
    sc.add_argument("--traffic", type=int, default=1000, help="turns of traffic to judge")
    sc.add_argument("--only", choices=("poisoned", "honest"), help="one variant (default: both)")
    sc.add_argument("--out", type=Path, default=None, help="a new work directory")
    sc.add_argument(
        "--encoder-update",
        choices=("heads", "adapter"),
        default=None,
        help="what retraining moves (default: the retraining default, heads)",
    )
    sc.set_defaults(func=cmd_scenario)
    rb = sub.add_parser("rollback", help="serve an earlier model version again")
    rb.add_argument("--to", type=int, default=None, help="version to return to (default: previous)")
    rb.add_argument("--no-reload", action="store_true", help="do not ask Triton to load")
    rb.set_defaults(func=cmd_rollback)
    pm = sub.add_parser("promote", help="list candidates awaiting approval; approve or reject one")
    which = pm.add_mutually_exclusive_group()
    which.add_argument("--approve", metavar="ID", default=None, help="promote this candidate")
    which.add_argument("--reject", metavar="ID", default=None, help="discard this candidate")
    pm.add_argument("--no-reload", action="store_true", help="do not ask Triton to load")
    pm.set_defaults(func=cmd_promote)
    ev = sub.add_parser("eval", help="score a labelled JSONL file through Triton and report")
    ev.add_argument("--data", required=True, help="JSONL rows: id, conversation, label, categories")
    ev.add_argument("--report", default=None, help="write the JSON report here")
    ev.add_argument(
        "--triton-url",
        default=None,
        help="Triton gRPC address (default: $GUARDSTREAM_TRITON__URL, else start the "
        "local tritonserver)",
    )
    ev.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    ev.set_defaults(func=cmd_eval)
    be = sub.add_parser("bench", help="model-only vs Triton vs end-to-end benchmark")
    be.add_argument("--turns", type=int, default=2000, help="turns per measurement")
    be.add_argument("--report", default=None, help="write the JSON report here")
    be.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="also drain a backlog of N turns and record the worker's memory",
    )
    be.set_defaults(func=cmd_bench)
    bs = sub.add_parser(
        "bench-stream", help="streamed replies judged while they grow vs whole replies"
    )
    bs.add_argument("--replies", type=int, default=60, help="safe and unsafe replies, each")
    bs.add_argument("--rate", type=float, default=50.0, help="generation rate, tokens/s")
    bs.add_argument(
        "--concurrency", type=int, default=1, help="replies streamed at once (1: latency)"
    )
    bs.add_argument("--report", default=None, help="write the JSON report here")
    bs.set_defaults(func=cmd_bench_stream)
    td = sub.add_parser("train-default", help="rebuild the shipped default model (models/default)")
    td.add_argument("--out", default="models/default", help="output directory")
    td.add_argument("--splits", default=None, help="also write the data splits here")
    td.set_defaults(func=cmd_train_default)
    ps = sub.add_parser(
        "public-splits", help="write the public-data train/validation/held-out splits as JSONL"
    )
    ps.add_argument("--out", default="var/splits", help="output directory")
    ps.set_defaults(func=cmd_public_splits)
    st = sub.add_parser("settings", help="print the effective settings (secrets masked)")
    st.add_argument("--markdown", action="store_true", help="print the settings reference")
    st.set_defaults(func=cmd_settings)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        sys.exit(func(args, settings))
    except Exception as exc:
        from guard.events import EventError
        from stream_app.launchers.process import StartupError

        if isinstance(exc, StartupError | FileNotFoundError | EventError):
            print(f"guardstream {args.command}: {exc}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
