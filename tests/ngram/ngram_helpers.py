"""Paths and settings shared by the n-gram tests (imported by name; pytest puts this folder
on sys.path)."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY = HERE / "data" / "tiny.txt"
GOLDEN = HERE / "data" / "tiny_kn3.arpa"
FALLBACK = (0.5, 1.0, 1.5)
