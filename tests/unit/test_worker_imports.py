"""The moderation worker stays light: it never imports torch or transformers."""

import subprocess
import sys

# Everything `guardstream worker` imports on its way to serving (guardstream_cli.main ->
# stream_app.worker.run_worker -> agents -> moderation -> triton_client -> guard.protocol).
WORKER_MODULES = (
    "guardstream_cli.main",
    "stream_app.worker",
    "stream_app.agents",
    "stream_app.app",
    "stream_app.topics",
    "stream_app.moderation",
    "stream_app.triton_client",
    "stream_app.kafka_io",
)
HEAVY = ("torch", "transformers", "peft", "sklearn")


def test_worker_modules_import_no_ml_framework() -> None:
    code = (
        "import sys\n"
        f"for m in {WORKER_MODULES!r}: __import__(m)\n"
        f"print(','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the worker imports {out.stdout.strip()}"


def test_the_check_sees_an_import_of_torch() -> None:
    """The subprocess check above can fail: importing the serving side pulls torch in."""
    code = "import sys, guard.serving, guard.causal_lm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
