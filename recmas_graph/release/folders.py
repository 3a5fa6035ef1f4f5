"""Finding a released repo's folder under a root: its Hub name, a prefix, an alias or a Hugging Face cache entry."""

from __future__ import annotations

import re
from pathlib import Path

from .styles import HF_ORG, ReleaseError

__all__ = ["norm_name", "find_release_folder", "subfolders_hint"]


def norm_name(text: str) -> str:
    """Lower-case alphanumerics only: ``Tool-Caller`` and ``toolcaller`` compare equal."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _hf_cache_snapshot(repo_dir: Path) -> Path | None:
    """The snapshot folder of a Hugging Face cache entry ``models--<org>--<name>`` (refs/main, else newest)."""
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snap = snapshots / ref.read_text(encoding="utf-8").strip()
        if snap.is_dir():
            return snap
    candidates = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def find_release_folder(root: str | Path, repo: str, *, prefix: str | None = None,
                        aliases: tuple[str, ...] = ()) -> Path | None:
    """Find the local copy of repo ``repo`` under ``root``; ``None`` when there is none.

    Accepted, in this order: ``root/<repo>``, ``root/RecursiveMAS/<repo>``, a Hugging Face cache
    entry ``root/models--RecursiveMAS--<repo>`` (its ``refs/main`` snapshot), any sub-folder whose
    name starts with ``prefix`` (case-insensitive, e.g. a different base-model suffix), then the
    ``aliases`` (e.g. the agent name ``planner``). Several prefix matches are an error.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    for base in (root, root / HF_ORG):
        direct = base / repo
        if direct.is_dir():
            return direct
    if repo.lower() in children:
        return children[repo.lower()]
    cache_entry = root / f"models--{HF_ORG}--{repo}"
    if cache_entry.is_dir():
        snap = _hf_cache_snapshot(cache_entry)
        if snap is not None:
            return snap
    if prefix:
        low = prefix.lower()
        matches = sorted(p for name, p in children.items() if name.startswith(low))
        if len(matches) > 1:
            raise ReleaseError(
                f"several folders under {root} could hold {HF_ORG}/{repo}: {', '.join(m.name for m in matches)}",
                culprit=str(root),
                hint="keep one of them, or name the folder explicitly (--agent NAME=PATH / --outerlinks PATH)")
        if matches:
            return matches[0]
    for alias in aliases:
        if alias.lower() in children:
            return children[alias.lower()]
    return None


def subfolders_hint(root: Path) -> str:
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return ""
    if not names:
        return f"{root} has no sub-folders"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"sub-folders of {root}: {shown}"
