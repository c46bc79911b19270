"""Starting the console: what it refuses to start with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guard.settings import Settings
from review_console.auth import hash_password
from review_console.serve import make_app


def test_with_reviewer_keys_every_account_needs_one(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.json"
    h = hash_password("pw", iterations=1000)
    accounts.write_text(json.dumps({"ann": {"password": h}, "bob": {"password": h}}))
    s = Settings(
        console={"accounts_file": accounts},  # type: ignore[arg-type]
        review={"reviewer_keys": {"ann": "ann-signing-key-0123456789"}},  # type: ignore[arg-type]
    )
    with pytest.raises(ValueError, match="bob have accounts but no signing key"):
        make_app(s)
    without_keys = Settings(console={"accounts_file": accounts})  # type: ignore[arg-type]
    assert make_app(without_keys) is not None  # unsigned reviews, as retraining is told
    with pytest.raises(ValueError, match="no reviewer accounts"):
        make_app(Settings())
