"""The code sandbox against hostile code: native extensions, hook tampering, the OS boundary, its settings.

The attack payload is a tiny compiled library whose constructor (run by ``dlopen``, whatever
loads it) writes a marker file outside the sandbox directory: a run is safe when it fails with a
refusal and the marker does not exist. Every attack runs once behind the audit layer alone and
once behind bubblewrap (skipped, with the reason, where bubblewrap does not work).
"""

from __future__ import annotations

import base64
import dis
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from textwrap import dedent

import pytest

from recmas_graph.cli import main
from recmas_graph.errors import RecmasError, RunError
from recmas_graph.tools import PythonTool
from recmas_graph.tools import sandbox
from recmas_graph.tools.sandbox import OsBoundary, os_boundary, run_python

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox needs POSIX resource limits")

BOUNDARIES = ["audit", "bubblewrap"]
PURELIB = Path(sysconfig.get_paths()["purelib"])


def _boundary(name: str) -> str:
    """The ``boundary`` argument that runs behind ``name``; skips when bubblewrap does not work here."""
    if name == "audit":
        return "audit"
    wall = os_boundary()
    if wall.name is None:
        pytest.skip(f"bubblewrap not available: {wall.detail}")
    return "strict"


# ----------------------------------------------------------------------------- the payload

_EVIL_C = r"""
#include <Python.h>
#include <stdio.h>
__attribute__((constructor)) static void escape(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("native code ran", f); fclose(f); }
}
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "evil", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_evil(void) { return PyModule_Create(&def); }
"""


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    """(the bytes of ``evil.so``, the marker its constructor writes), checked to work outside the sandbox."""
    cc = shutil.which("gcc") or shutil.which("cc")
    include = sysconfig.get_paths().get("include")
    if cc is None or not include or not (Path(include) / "Python.h").exists():
        pytest.skip("no C compiler or Python.h to build the extension module the attacks load")
    folder = tmp_path_factory.mktemp("payload")
    marker = folder / "marker.txt"
    (folder / "evil.c").write_text(_EVIL_C)
    subprocess.run([cc, "-shared", "-fPIC", f"-I{include}", f'-DMARKER="{marker}"', "-o", str(folder / "evil.so"),
                    str(folder / "evil.c")], check=True, capture_output=True)
    subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(folder / 'evil.so')!r})"], check=True)
    assert marker.read_text() == "native code ran"  # the payload works: a run that loads it leaves the marker
    marker.unlink()
    return (folder / "evil.so").read_bytes(), marker


# Each attack finds evil.so (its bytes) in the sandbox directory as `path` and tries to run it.
_SPEC = "import importlib.machinery, importlib.util\n"
_LOADER = _SPEC + "loader = importlib.machinery.ExtensionFileLoader('evil', {where})\n" \
                  "loader.create_module(importlib.util.spec_from_loader('evil', loader))"
ATTACKS = {
    "import": "sys.path.insert(0, os.getcwd())\nimport evil",
    "importlib.import_module": "sys.path.insert(0, os.getcwd())\nimport importlib\nimportlib.import_module('evil')",
    "spec_from_file_location": _SPEC + dedent("""\
        spec = importlib.util.spec_from_file_location('evil', path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))"""),
    "ExtensionFileLoader": _LOADER.format(where="path"),
    "_imp.create_dynamic": _SPEC + "import _imp\n"
                           "_imp.create_dynamic(importlib.machinery.ModuleSpec('evil', None, origin=path))",
    "ctypes.CDLL": "import ctypes\nctypes.CDLL(path)",
    "ctypes.cdll.LoadLibrary": "import ctypes\nctypes.cdll.LoadLibrary(path)",
    "zipimport": dedent("""\
        import zipfile
        with zipfile.ZipFile('evil.zip', 'w') as z:
            z.write(path, 'evil.so')
        sys.path.insert(0, os.path.abspath('evil.zip'))
        import evil"""),
    "/proc/self/fd of a memfd": "fd = os.memfd_create('evil')\nos.write(fd, open(path, 'rb').read())\n"
                                + _LOADER.format(where="f'/proc/self/fd/{fd}'"),
    "copied into the installation through dir_fd": dedent("""\
        folder = os.open(PURELIB, os.O_RDONLY)
        out = os.open('evil.so', os.O_WRONLY | os.O_CREAT, 0o755, dir_fd=folder)
        os.write(out, open(path, 'rb').read())
        import evil"""),
    "sqlite3.load_extension": dedent("""\
        import sqlite3
        connection = sqlite3.connect(':memory:')
        connection.enable_load_extension(True)
        connection.load_extension(path)"""),
}


def _attack(so: bytes, attack: str) -> str:
    return dedent(f"""\
        import base64, os, sys
        PURELIB = {str(PURELIB)!r}
        open('evil.so', 'wb').write(base64.b64decode({base64.b64encode(so).decode()!r}))
        path = os.path.abspath('evil.so')
        """) + ATTACKS[attack] + "\nprint('loaded')\n"


@pytest.mark.parametrize("where", BOUNDARIES)
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_native_code_written_by_the_code_never_loads(payload: tuple[bytes, Path], attack: str, where: str) -> None:
    so, marker = payload
    if attack == "sqlite3.load_extension":
        import sqlite3

        if not hasattr(sqlite3.Connection, "enable_load_extension"):
            pytest.skip("this Python's sqlite3 cannot load extensions at all")
    planted = PURELIB / "evil.so"
    assert not planted.exists()
    try:
        result = run_python(_attack(so, attack), boundary=_boundary(where), timeout_s=30)
    finally:
        escaped = marker.exists() or planted.exists()
        marker.unlink(missing_ok=True)
        planted.unlink(missing_ok=True)
    assert not escaped, f"{attack}: native code ran or was planted outside the sandbox\n{result.stderr}"
    assert not result.ok and "loaded" not in result.stdout, result
    assert result.boundary == where
    if attack == "zipimport":  # a zip cannot hold extension modules: the import simply fails
        assert "ModuleNotFoundError" in result.stderr, result.stderr
    else:
        assert "sandbox: " in result.stderr and "refused" in result.stderr, result.stderr


@pytest.mark.parametrize("where", BOUNDARIES)
def test_installed_extension_modules_still_load(where: str) -> None:
    code = ("import _decimal, _json, numpy, sympy\nimport traceback\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n    assert 'ZeroDivisionError' in traceback.format_exc()\n"
            "import pathlib\npathlib.Path('notes.txt').write_text('hi')\n"
            "print(_decimal.Decimal('1.1') + 1, numpy.arange(4).sum(), sympy.Integer(2) ** 10, "
            "pathlib.Path('notes.txt').read_text())")
    result = run_python(code, boundary=_boundary(where), timeout_s=60)
    assert result.ok, result.stderr
    assert result.stdout.split() == ["2.1", "6", "1024", "hi"] and result.boundary == where


# ----------------------------------------------------------------------------- tampering with the hook


def test_the_hook_looks_nothing_up_when_called() -> None:
    """No global, builtin or closure lookup: patching builtins or modules cannot change its answers."""
    code = compile(sandbox._BOOTSTRAP, "<bootstrap>", "exec")
    install = next(c for c in code.co_consts if getattr(c, "co_name", "") == "_install")
    functions = {c.co_name: c for c in install.co_consts if hasattr(c, "co_code")}
    assert {"text", "norm", "inside", "refuse", "kind", "hook"} <= functions.keys()
    for name in ("text", "norm", "inside", "refuse", "kind", "hook"):
        fn = functions[name]
        lookups = [i.opname + " " + str(i.argval) for i in dis.get_instructions(fn)
                   if i.opname in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLASSDEREF")]
        assert not lookups and not fn.co_freevars, (name, lookups)


@pytest.mark.parametrize("where", BOUNDARIES)
@pytest.mark.parametrize("tamper", [
    "import builtins\nbuiltins.any = lambda items: True\nbuiltins.isinstance = lambda *a: False",
    "import os.path, posixpath\nos.path.realpath = posixpath.realpath = lambda p, **k: os.getcwd() + '/x'",
    "import os\nos.fsdecode = lambda p: os.getcwd() + '/x'\nos.lstat = None",
    dedent("""\
        # reach the hook's helpers through a traceback and swap their code
        try:
            open('/etc/hostname')
        except PermissionError as e:
            tb = e.__traceback__
        helpers = []
        while tb:
            helpers += [v for v in tb.tb_frame.f_locals.values() if callable(v)]
            tb = tb.tb_next
        for h in helpers:
            try:
                h.__code__ = (lambda *a, **k: 2).__code__
            except (PermissionError, ValueError, AttributeError, TypeError):
                pass"""),
])
def test_patching_what_the_hook_uses_changes_nothing(tmp_path: Path, tamper: str, where: str) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    target = tmp_path / "planted.txt"
    code = tamper + dedent(f"""
        for p, mode in (({str(secret)!r}, 'r'), ({str(target)!r}, 'w')):
            try:
                print(open(p, mode).read() if mode == 'r' else open(p, mode).write('x'))
            except OSError as err:
                print(type(err).__name__, err)
        """)
    result = run_python(code, boundary=_boundary(where))
    assert result.ok, result.stderr
    assert "top secret" not in result.stdout and not target.exists()
    assert result.stdout.count("sandbox: ") == 2, result.stdout


@pytest.mark.parametrize("code", [
    "import os\nos.chdir('/')",
    "import os\nos.symlink('/etc/hostname', 'link')",
    pytest.param("import os, stat\nos.mknod('null', stat.S_IFCHR | 0o600, os.makedev(1, 3))\nopen('null', 'w')",
                 marks=pytest.mark.skipif(os.geteuid() != 0, reason="only root may create device files")),
    "def f():\n    pass\nf.__code__.replace(co_consts=(None,) * 40)",
])
def test_operations_that_would_undo_the_walls_are_refused(code: str) -> None:
    result = run_python(code, boundary="audit")
    assert not result.ok and "sandbox: " in result.stderr and "refused" in result.stderr, result.stderr


# ----------------------------------------------------------------------------- the OS boundary


def test_os_boundary_confines_code_that_slips_the_audit_layer(payload: tuple[bytes, Path], tmp_path: Path) -> None:
    """Plain Python (no audit hook) in the same bwrap command line: native code runs, yet cannot
    write outside its folder, into the installation, or reach a socket the test listens on."""
    wall = os_boundary()
    if wall.name is None:
        pytest.skip(f"bubblewrap not available: {wall.detail}")
    so, marker = payload
    outside, installed = tmp_path / "escaped.txt", PURELIB / "recmas_escape_probe.txt"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(1.0)
    port = listener.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="recmas_sandbox_")
    try:
        Path(workdir, "evil.so").write_bytes(so)
        code = dedent(f"""\
            import ctypes, os, socket
            ctypes.CDLL(os.path.abspath('evil.so'))  # its constructor tries to write the marker
            for p in ({str(outside)!r}, {str(installed)!r}):
                try:
                    open(p, 'w').write('x')
                    print('wrote', p)
                except OSError as err:
                    print('refused', type(err).__name__)
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=3)
                print('connected')
            except OSError as err:
                print('refused', type(err).__name__)
            open('inside.txt', 'w').write('ok')
            """)
        argv = sandbox._bwrap_argv(wall.detail, workdir) + [sys.executable, "-I", "-c", code]
        proc = subprocess.run(argv, cwd=workdir, capture_output=True, text=True, timeout=60)
        inside = Path(workdir, "inside.txt").read_text() if Path(workdir, "inside.txt").exists() else ""
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()
        shutil.rmtree(workdir, ignore_errors=True)
        escaped = [p for p in (outside, installed, marker) if p.exists()]
        installed.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("refused") for line in lines), proc.stdout
    assert not escaped and inside == "ok"


def test_auto_uses_the_os_boundary_when_it_works() -> None:
    if os_boundary().name is None:
        pytest.skip(f"bubblewrap not available: {os_boundary().detail}")
    assert run_python("print(1)", boundary="auto").boundary == "bubblewrap"
    spin = run_python("while True:\n    pass", boundary="strict", timeout_s=20, cpu_s=1)
    assert spin.reason == "cpu" and spin.exit_code == -24  # bwrap's 128 + N exit read back as signal N (SIGXCPU)


def test_a_bwrap_that_does_not_work_here_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: "/bin/false")  # installed, yet fails
    wall = sandbox.os_boundary.__wrapped__()
    assert wall.name is None and "does not work here" in wall.detail and "user namespaces" in wall.hint
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    wall = sandbox.os_boundary.__wrapped__()
    assert wall.name is None and "not installed" in wall.detail and "apt-get install bubblewrap" in wall.hint


@pytest.fixture
def no_os_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = OsBoundary(None, "bubblewrap (bwrap) is not installed", "install bubblewrap")
    monkeypatch.setattr(sandbox, "os_boundary", lambda: missing)
    sandbox._say_audit_only.cache_clear()


def test_strict_refuses_to_run_without_the_os_boundary(no_os_boundary: None) -> None:
    result = run_python("print('ran')", boundary="strict")
    assert not result.ok and result.reason == "unsupported" and result.boundary == "none" and result.stdout == ""
    assert "bubblewrap" in result.stderr and "fix:" in result.stderr
    assert result.error_text.startswith("the sandbox cannot run here")


def test_auto_falls_back_to_the_audit_layer_and_says_so_once(no_os_boundary: None,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="recmas_graph.tools.sandbox"):
        first, second = run_python("print(1)"), run_python("print(2)", boundary="auto")
    assert first.ok and second.ok and first.boundary == second.boundary == "audit"
    warnings = [r for r in caplog.records if "audit layer alone" in r.getMessage()]
    assert len(warnings) == 1 and "install bubblewrap" in warnings[0].getMessage()


def test_the_environment_variable_sets_the_default(monkeypatch: pytest.MonkeyPatch, no_os_boundary: None) -> None:
    monkeypatch.setenv("RECMAS_SANDBOX", "strict")
    assert run_python("print(1)").reason == "unsupported"
    assert PythonTool().run("print(1)").details["reason"] == "unsupported"
    with pytest.raises(RunError, match="code_tests"):
        from recmas_graph.eval.scoring import METRICS

        METRICS["code_tests"].score("```python\nx = 1\n```", "assert x == 1")
    monkeypatch.setenv("RECMAS_SANDBOX", "audit")
    assert run_python("print(1)").boundary == "audit"
    monkeypatch.setenv("RECMAS_SANDBOX", "jail")
    with pytest.raises(RecmasError, match="RECMAS_SANDBOX"):
        run_python("print(1)")
    with pytest.raises(ValueError, match="boundary"):
        run_python("print(1)", boundary="jail")


def test_python_tool_reports_its_boundary() -> None:
    result = PythonTool(boundary="audit").run("print(6 * 7)")
    assert result.ok and result.output == "42\n" and result.details["boundary"] == "audit"


# ----------------------------------------------------------------------------- recmas doctor


def test_doctor_reports_the_boundary(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.delenv("RECMAS_SANDBOX", raising=False)
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["sandbox"]
    assert report["setting"] == "auto" and report["os_boundary"] == os_boundary().name
    assert report["code_runs_behind"] == (os_boundary().name or "audit")
    assert main(["doctor"]) == 0
    assert "sandbox OS boundary" in capsys.readouterr().out


def test_doctor_fails_when_strict_cannot_be_met(capsys: pytest.CaptureFixture[str], no_os_boundary: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import recmas_graph.cli.doctor as doctor

    monkeypatch.setattr(doctor, "os_boundary", sandbox.os_boundary)
    monkeypatch.setenv("RECMAS_SANDBOX", "strict")
    assert main(["doctor"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "none" in out and "fix: install bubblewrap" in out and "runs are refused" in out
