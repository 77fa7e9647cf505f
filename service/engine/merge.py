"""What a task receives (section E): withParams under the instance kwargs, merged recursively."""

from __future__ import annotations

from typing import Any


def merge_kwargs(with_params: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """E1: where both sides hold an object under a key, merge them key by key, recursively;
    otherwise the instance's value replaces the withParams value (lists are replaced)."""
    merged = dict(with_params)
    for key, value in kwargs.items():
        base = merged.get(key)
        if isinstance(value, dict) and isinstance(base, dict):
            merged[key] = merge_kwargs(base, value)
        else:
            merged[key] = value
    return merged
