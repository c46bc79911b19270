"""Helm chart tests: render charts/guardstream and assert on the manifests."""
