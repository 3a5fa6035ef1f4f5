"""PEFT-proof model views of released agent folders, and which agents hold the same model."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from .resolve import ResolvedRelease
from .styles import ReleaseError

__all__ = ["model_view", "same_model_files", "shared_folders"]

#: Files that make transformers (with peft installed) treat a folder as an adapter, plus the link files.
_VIEW_EXCLUDED = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "innerlink_config.json",
                  "README.md", "_plain_model_view"}


def _in_view(path: Path) -> bool:
    name = path.name
    return not (name in _VIEW_EXCLUDED or name.startswith(".") or path.suffix == ".pt")


def _link(target: Path, link: Path) -> None:
    """Symlink ``link`` -> ``target``; hard link or copy where symlinks are not allowed."""
    try:
        link.symlink_to(target, target_is_directory=target.is_dir())
        return
    except OSError:
        pass
    if target.is_dir():
        shutil.copytree(target, link)
        return
    try:
        os.link(target, link)
    except OSError:
        shutil.copy2(target, link)


def _view_is_current(view: Path, entries: list[Path]) -> bool:
    if not view.is_dir():
        return False
    names = {p.name for p in view.iterdir()}
    if names != {p.name for p in entries}:
        return False
    for entry in entries:
        item = view / entry.name
        if not item.is_symlink() or Path(os.readlink(item)) != entry.resolve():
            return False
    return True


def _default_views_dir() -> Path:
    from ..runtime.sources.assets import cache_root

    return cache_root() / "release-views"


def model_view(folder: str | Path, views_dir: str | Path | None = None) -> Path:
    """A folder transformers loads as a plain model, whatever else ``folder`` holds.

    When ``folder`` has an ``adapter_config.json`` (every released agent repo), returns
    ``<views_dir>/<name>-<hash>``: links to all of ``folder``'s files but ``adapter_config.json``,
    ``innerlink_config.json``, ``*.pt`` and hidden files, so transformers' PEFT detection cannot
    trigger. Otherwise returns ``folder`` itself. Idempotent; a stale view is rebuilt atomically.
    ``views_dir`` defaults to ``cache_root() / "release-views"``.
    """
    folder = Path(folder).expanduser().resolve()
    if not (folder / "adapter_config.json").exists():
        return folder
    root = Path(views_dir).expanduser().resolve() if views_dir is not None else _default_views_dir()
    digest = hashlib.sha256(str(folder).encode("utf-8")).hexdigest()[:12]
    view = root / f"{folder.name}-{digest}"
    entries = sorted((p for p in folder.iterdir() if _in_view(p)), key=lambda p: p.name)
    if _view_is_current(view, entries):
        return view
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{view.name}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        for entry in entries:
            _link(entry.resolve(), tmp / entry.name)
        if view.exists() or view.is_symlink():
            if view.is_symlink() or view.is_file():
                view.unlink()
            else:
                shutil.rmtree(view)  # a view holds links only (copies where links are not allowed)
        os.replace(tmp, view)
    except OSError as err:
        raise ReleaseError(f"cannot create the model view {view}: {err.strerror or err}", culprit=str(folder),
                           hint="pass a writable --views-dir (or set RECMAS_CACHE)") from None
    return view


def _model_files(folder: Path) -> dict[str, Path]:
    files = {"config.json": folder / "config.json"} if (folder / "config.json").is_file() else {}
    for pattern in ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json"):
        for p in folder.glob(pattern):
            if not p.name.startswith("adapter"):
                files[p.name] = p
    return files


def _hf_etag(path: Path) -> str | None:
    """The etag (sha256 for LFS files) that ``hf download --local-dir`` records beside a file."""
    meta = path.parent / ".cache" / "huggingface" / "download" / f"{path.name}.metadata"
    try:
        lines = meta.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    return lines[1].strip() if len(lines) > 1 and lines[1].strip() else None


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 23) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True


def _same_file(a: Path, b: Path) -> bool:
    ra, rb = a.resolve(), b.resolve()
    if ra == rb:
        return True
    sa, sb = ra.stat(), rb.stat()
    if sa.st_size != sb.st_size:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if ra.parent.name == "blobs" and rb.parent.name == "blobs":  # HF cache blobs are named by their hash
        return ra.name == rb.name
    ea, eb = _hf_etag(a), _hf_etag(b)
    if ea and eb:
        return ea == eb
    return _same_bytes(ra, rb)


def same_model_files(a: str | Path, b: str | Path) -> bool:
    """Whether two folders hold the same model (config.json and weight files identical).

    Cheap where it can be (same file, HF cache blob names, ``hf download`` metadata), else compares
    the bytes. The released deliberation agents are two repos with the same frozen Qwen3.5-4B.
    """
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    fa, fb = _model_files(a), _model_files(b)
    if not fa or set(fa) != set(fb):
        return False
    return all(_same_file(fa[name], fb[name]) for name in sorted(fa))


def shared_folders(resolved: ResolvedRelease, share_models: bool) -> dict[str, Path]:
    """Agent -> model folder, agents holding an identical model mapped to the first such agent's folder."""
    chosen: dict[str, Path] = {}
    for name, agent in resolved.agents.items():
        folder = agent.folder
        if share_models:
            for other in chosen.values():
                if same_model_files(other, folder):
                    folder = other
                    break
        chosen[name] = folder
    return chosen
