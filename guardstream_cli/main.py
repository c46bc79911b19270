"""The ``guardstream`` command. Subcommands import their parts lazily."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Callable

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
    from stream_app.launchers.model import resolve_local_model
    from stream_app.launchers.tritonserver import TritonPorts, triton_process

    model = resolve_local_model(s.local.data_dir)
    print(f"guardstream serve: model {s.triton.model_name!r} = {model.description}", flush=True)
    proc = triton_process(
        s.local.model_repository,
        s.local.data_dir / "triton",
        TritonPorts(
            s.local.triton_http_port, s.local.triton_grpc_port, s.local.triton_metrics_port
        ),
        explicit_models=[s.triton.model_name],
        env={"GUARDSTREAM_MODEL_CHECKPOINT": str(model.checkpoint.resolve())},
        timeout_s=args.timeout,
    )
    with proc:
        print(
            f"tritonserver ready: grpc 127.0.0.1:{s.local.triton_grpc_port}, "
            f"http 127.0.0.1:{s.local.triton_http_port} (Ctrl-C stops it)",
            flush=True,
        )
        _wait_for_signal()
    print("tritonserver stopped", flush=True)
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
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        sys.exit(func(args, settings))
    except Exception as exc:
        from stream_app.launchers.process import StartupError

        if isinstance(exc, StartupError | FileNotFoundError):
            print(f"guardstream {args.command}: {exc}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
