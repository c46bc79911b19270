#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests against the official JSON schemas.

A strict wrapper around the ``kubernetes_validate`` Python API: unknown fields are
errors, and so is any kind without a schema (a typo, or an API removed from the target
Kubernetes version such as ``autoscaling/v2beta2``), unless its API group is allow-listed
(CRD groups such as ``monitoring.coreos.com``, whose schemas are not bundled).
``kubernetes-validate`` itself only warns on a missing schema and exits 0.

Usage: validate_manifests.py [--kube-version 1.30.0] [--allow-group GROUP]... FILE... (or -)
Exit status: 0 when every document passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any

import kubernetes_validate
import yaml

DEFAULT_KUBE_VERSION = "1.30.0"
DEFAULT_ALLOWED_GROUPS = ("monitoring.coreos.com",)


def api_group(api_version: str) -> str:
    """``apps/v1`` -> ``apps``; the core group (``v1``) is ``""``."""
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def validate_document(
    doc: Any, kube_version: str, allowed_groups: Iterable[str]
) -> tuple[bool, str]:
    """Validate one manifest; returns (ok, message)."""
    if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
        return False, "not a Kubernetes object (needs apiVersion and kind)"
    name = doc.get("metadata", {}).get("name", "?")
    what = f"{doc['kind']}/{name} ({doc['apiVersion']})"
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(root)"
        return False, f"{what}: {path}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError:
        group = api_group(doc["apiVersion"])
        if group in set(allowed_groups):
            return True, f"{what}: no bundled schema; API group {group} is allow-listed"
        return False, (
            f"{what}: no schema for this kind/apiVersion in Kubernetes {kube_version} "
            "(typo, or an API removed in this version?)"
        )
    return True, f"{what}: valid"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="multi-document YAML files; - for stdin")
    parser.add_argument("--kube-version", default=DEFAULT_KUBE_VERSION)
    parser.add_argument(
        "--allow-group",
        action="append",
        dest="allowed_groups",
        help=f"API group allowed without a schema (default: {', '.join(DEFAULT_ALLOWED_GROUPS)})",
    )
    args = parser.parse_args(argv)
    allowed = args.allowed_groups or list(DEFAULT_ALLOWED_GROUPS)

    errors = 0
    valid = 0
    total = 0
    for path in args.files:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        if not docs:
            print(f"ERROR {path}: no manifests", file=sys.stderr)
            errors += 1
        for doc in docs:
            total += 1
            ok, message = validate_document(doc, args.kube_version, allowed)
            if ok:
                valid += 1
            else:
                errors += 1
                print(f"ERROR {path}: {message}", file=sys.stderr)
    status = "FAILED" if errors else "ok"
    print(f"{status}: {valid}/{total} manifests valid (Kubernetes {args.kube_version}, strict)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
