"""Run untrusted Python code in a separate, limited process (the ``python`` tool and code scoring).

:func:`run_python` starts ``sys.executable -I`` in a new session behind two walls.

The **OS boundary** (used when the machine allows it, see ``boundary`` below) runs the process in
`bubblewrap <https://github.com/containers/bubblewrap>`_ (``bwrap``): new user, PID, network, IPC,
UTS and cgroup namespaces (no network at all, no other process visible), a read-only view of the
filesystem in which home directories, ``/tmp``, ``/run`` and the like are empty (the Python
installation stays visible), the sandbox directory as the only writable place, no capabilities
and no new privileges (``PR_SET_NO_NEW_PRIVS``), and the process dies with its parent.

The **audit layer** (always) is a bootstrap that installs a PEP 578 audit hook before the code
runs, plus:

- a fresh temporary directory as the working directory, deleted afterwards;
- an almost empty environment (no variables of the caller, ``HOME`` / ``TMPDIR`` = the directory);
- resource limits set before the interpreter starts: address space (``RLIMIT_AS``), CPU seconds
  (``RLIMIT_CPU``), size of written files and output (``RLIMIT_FSIZE``), no core dumps (no
  ``RLIMIT_NPROC``: Linux counts threads against it, so it would break threaded code, and it is
  per user, not per process; new processes are refused by the audit hook instead);
- a wall-clock timeout after which the whole process group is killed.

The hook refuses opening files outside the directory (reading the Python installation's own files
is allowed, so the standard library and installed packages import), writing or deleting outside
it, listing other directories, changing directory, symbolic links, opening device files, starting
processes (``subprocess``, ``os.system``, ``os.fork``, ``os.exec*``), sockets, signals, native
calls through ``ctypes`` (importing it works: sympy needs it), building code objects from bytes,
SQLite extensions, and the introspection a hook bypass would need (``gc`` referrers, tracing,
replacing the hook's code or defaults). Native code may be loaded only from the Python
installation: an extension module (whatever loader asks: ``import``, ``importlib``,
``ExtensionFileLoader``, ``_imp.create_dynamic``) is checked at the interpreter's own audit event
just before ``dlopen``, by its lexical and its resolved path, so a ``.so`` the code writes in its
directory, or reaches through ``/proc/self/fd``, never loads. The hook keeps its state in default
arguments and looks nothing up at call time, so patching ``builtins`` or ``os.path`` does not
change its answers.

The audit layer is a Python-level wall: it stops honest model-written code and the escapes we know
of, but it is only as strong as the interpreter. A memory-safety bug (crafted bytecode through
``marshal``, a crash in an extension module) would get past it, and CPython audits neither
``os.mknod`` nor ``os.mkfifo`` (empty files can appear wherever the process may write). The OS
boundary does not depend on the interpreter: behind it such code still cannot write outside its
directory, reach the network or read the caller's files under ``/home``, ``/root`` and ``/tmp``.
See ``docs/sandbox.md``.

``boundary`` (default: the environment variable ``RECMAS_SANDBOX``, else ``"auto"``):

- ``"auto"``: the OS boundary when it works here, else the audit layer alone (logged once);
- ``"strict"``: the OS boundary or nothing: without it the run is refused (``reason ==
  "unsupported"``, with the fix in ``stderr``);
- ``"audit"``: the audit layer alone.

>>> run_python("print(1 + 1)").stdout
'2\\n'
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

from ..errors import RecmasError

__all__ = ["SandboxResult", "run_python", "DEFAULTS", "BOUNDARIES", "SANDBOX_ENV", "OsBoundary", "os_boundary",
           "default_boundary"]

#: Default limits (seconds, MiB, characters).
DEFAULTS: dict[str, float] = {
    "timeout_s": 10.0,
    "memory_mb": 1024,
    "cpu_s": 10.0,
    "max_output_chars": 10_000,
    "file_mb": 16,
}

#: The values of ``boundary`` (and of :data:`SANDBOX_ENV`).
BOUNDARIES = ("auto", "strict", "audit")
#: The environment variable that sets the default ``boundary`` of :func:`run_python`.
SANDBOX_ENV = "RECMAS_SANDBOX"

_INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: 'sudo apt-get install bubblewrap'; Fedora: "
                 "'sudo dnf install bubblewrap'), or set RECMAS_SANDBOX=audit to accept the audit layer alone")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    ``reason`` is ``"ok"``, ``"error"`` (non-zero exit, e.g. an exception or a refused operation),
    ``"timeout"`` (wall clock), ``"cpu"`` (CPU seconds), ``"memory"`` (address-space limit),
    ``"output"`` (output or file size limit), ``"killed"`` (another signal) or ``"unsupported"``
    (not run: no POSIX system, or ``boundary="strict"`` without an OS boundary).
    ``stdout`` keeps the first ``max_output_chars`` characters, ``stderr`` the last ones.
    ``boundary`` says what confined the run: ``"bubblewrap"`` (the OS boundary, with the audit
    layer inside it), ``"audit"`` (the audit layer alone) or ``"none"`` (not run).
    """

    ok: bool
    stdout: str
    stderr: str
    exit_code: int | None
    reason: str
    elapsed_s: float
    truncated: bool = False
    boundary: str = "audit"

    @property
    def error_text(self) -> str:
        """A short explanation of a failed run (empty when it succeeded)."""
        if self.ok:
            return ""
        detail = {
            "timeout": "timed out (the process was killed)",
            "cpu": "CPU time limit exceeded",
            "memory": "memory limit exceeded (MemoryError)",
            "output": "output or file size limit exceeded",
            "killed": f"killed by signal {-(self.exit_code or 0)}",
            "unsupported": "the sandbox cannot run here",
        }.get(self.reason, f"exited with status {self.exit_code}")
        tail = self.stderr.strip()
        return f"{detail}\n{tail}" if tail else detail


# The bootstrap runs in the child before the user's code: it reads main.py, installs the audit
# hook, and runs the code as __main__. The hook's functions keep everything they use (builtins,
# posix functions, the roots) in default arguments: they look up no global or builtin name when
# called, and have no closure cell, so the sandboxed code cannot change their answers by patching
# modules; replacing their code or defaults is refused (tests/test_sandbox.py checks the bytecode).
# Paths are resolved with posix.lstat / readlink, not with os.path.realpath (patchable).
_BOOTSTRAP = r'''
import sys, os, builtins, posix
def _install():
    workdir = sys.argv[1]
    root = (workdir, os.path.realpath(workdir))
    read_roots = tuple(p for p in sys.argv[2].split(os.pathsep) if p)

    def text(p, type=type, issubclass=issubclass, str=str, bytes=bytes, int=int, as_str=str.__str__,
             decode=bytes.decode, fspath=posix.fspath):
        """A path argument as an exact str (None for a descriptor or no path). CPython converts path
        objects before it audits os and io calls; only Python-level events (shutil.rmtree) pass one."""
        if p is None or issubclass(type(p), int):
            return None
        if not issubclass(type(p), (str, bytes)):
            p = fspath(p)
        if issubclass(type(p), str):
            return as_str(p)
        return decode(p, "utf-8", "surrogateescape")

    def norm(path, follow, lstat=posix.lstat, readlink=posix.readlink, getcwd=posix.getcwd, OSError=OSError):
        """``path`` made absolute with '.' and '..' resolved, and symbolic links when ``follow``."""
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        todo = path.split("/")
        todo.reverse()
        out = []
        hops = 0
        while todo:
            name = todo.pop()
            if name == "" or name == ".":
                continue
            if name == "..":
                if out:
                    out.pop()
                continue
            out.append(name)
            if follow:
                here = "/" + "/".join(out)
                try:
                    link = lstat(here).st_mode & 0o170000 == 0o120000
                except OSError:
                    link = False
                if link:
                    hops += 1
                    if hops > 40:
                        return ""
                    target = readlink(here)
                    out.pop()
                    if target.startswith("/"):
                        out = []
                    more = target.split("/")
                    more.reverse()
                    todo += more
        return "/" + "/".join(out)

    def inside(path, roots, norm=norm):
        """How many of the path's two forms (lexical, resolved) lie inside one of ``roots``: 0, 1 or 2."""
        count = 0
        for form in (norm(path, False), norm(path, True)):
            for r in roots:
                if form == r or form.startswith(r + "/"):
                    count += 1
                    break
        return count

    def refuse(what, why, PermissionError=PermissionError):
        raise PermissionError("sandbox: " + what + " refused: " + why)

    def kind(path, stat=posix.stat, OSError=OSError):
        """The file type bits (S_IFMT) of what ``path`` names now; 0 when it names nothing."""
        try:
            return stat(path).st_mode & 0o170000
        except OSError:
            return 0

    def hook(event, args, text=text, inside=inside, refuse=refuse, kind=kind,
             root=root, read_roots=read_roots, len=len, type=type, str=str, int=int, ImportError=ImportError,
             read_files=frozenset(("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero")),
             write_flags=os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC,
             denied_prefixes=("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                              "os.system", "os.kill", "os.killpg", "os.setuid", "os.setgid", "os.startfile",
                              "pty.", "socket.", "ctypes.", "gc.get_", "resource.", "webbrowser.",
                              "urllib.Request", "http.client.", "ftplib.", "smtplib.", "telnetlib.", "imaplib.",
                              "poplib.", "nntplib.", "_winapi.", "winreg.", "msvcrt.", "sys._current_frames",
                              "sys.setprofile", "sys.settrace", "sys.monitoring", "sqlite3.enable_load_extension",
                              "sqlite3.load_extension", "code.__new__", "os.chdir", "os.symlink"),
             denied_imports=frozenset(("cffi", "_posixsubprocess")), own=(text, norm, inside, refuse, kind),
             write_events=frozenset(("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.link", "os.chmod",
                                     "os.chown", "os.truncate", "os.utime", "os.setxattr", "os.removexattr",
                                     "os.chflags", "os.lchflags", "os.lockf", "shutil.rmtree", "shutil.chown")),
             two_paths=frozenset(("os.rename", "os.link")),
             read_events=frozenset(("os.listdir", "os.scandir", "os.getxattr", "os.listxattr", "glob.glob",
                                    "glob.glob/2", "os.walk", "os.fwalk"))):
        if event == "open":
            path = text(args[0])
            if path is None:
                return
            mode, flags = args[1], (args[2] if len(args) > 2 else 0)
            writing = (type(mode) is str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
                type(flags) is int and flags & write_flags != 0)
            node = kind(path)
            if (node == 0o020000 or node == 0o060000) and path not in read_files:  # os.mknod is not audited
                refuse("open(%r)" % (args[0],), "device files cannot be opened")
            if inside(path, root) == 2:
                return
            if writing:
                refuse("open(%r)" % (args[0],), "only files inside the sandbox directory may be written")
            if inside(path, read_roots) == 2 or path in read_files:
                if node == 0o040000:  # a directory descriptor would let os.open(..., dir_fd=) write there
                    refuse("open(%r)" % (args[0],), "directories outside the sandbox directory cannot be opened")
                return
            refuse("open(%r)" % (args[0],), "only files inside the sandbox directory may be read")
        elif event == "import":
            name = text(args[0]) or ""
            if name.split(".")[0] in denied_imports:
                raise ImportError("sandbox: import of %r refused" % name, name=name)
            if len(args) > 1 and args[1] is not None:  # an extension module, just before dlopen
                path = text(args[1])
                if not (path and inside(path, read_roots) == 2 and inside(path, root) == 0):
                    refuse("loading native code from %r" % (args[1],),
                           "extension modules may only come from the Python installation")
        elif event == "ctypes.dlopen" and args and args[0] is None:
            return  # ctypes itself opens the running program at import; symbols and calls stay refused
        elif event == "object.__setattr__":  # __code__, __defaults__, __kwdefaults__ of a function
            for f in own:
                if args[0] is f:
                    refuse("changing the sandbox's own functions", "they are its audit hook")
        elif event == "sys.addaudithook":
            refuse("adding audit hooks", "the sandbox's hook stays the only one")
        elif event in write_events:
            for p in (args[:2] if event in two_paths else args[:1]):
                path = text(p)
                if path is not None and inside(path, root) != 2:
                    refuse("%s(%r)" % (event, p), "only paths inside the sandbox directory may change")
        elif event in read_events:
            path = text(args[0]) if args else None
            if path and inside(path, root) != 2 and inside(path, read_roots) != 2:
                refuse("%s(%r)" % (event, args[0]), "outside the sandbox directory")
        elif event.startswith(denied_prefixes):
            refuse(event, "processes, sockets, signals, native calls and changing directory are not allowed")

    with open(os.path.join(workdir, "main.py"), encoding="utf-8") as f:
        source = f.read()
    code = compile(source, "main.py", "exec")
    sys.argv[:] = ["main.py"]
    # subprocess imports fine (asyncio needs it) but cannot start anything: its native helper is a stub
    stub = type(sys)("_posixsubprocess")
    def fork_exec(*args, **kwargs):
        refuse("starting a process", "processes are not allowed")
    stub.fork_exec = fork_exec
    sys.modules["_posixsubprocess"] = stub
    sys.addaudithook(hook)
    return code
_code = _install()
del _install
_ns = {"__name__": "__main__", "__file__": "main.py", "__builtins__": builtins}
exec(_code, _ns)
'''


# Traceback lines of the bootstrap's own frames: noise for whoever reads the error.
_BOOTSTRAP_FRAME = re.compile(r'^  File "<string>", line \d+, in [<>\w]+\n', re.M)


def _prefixes() -> list[str]:
    """The Python installation's top directories (venv and base), as given and resolved."""
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable)}
    return sorted({form for p in found if p for form in (os.path.abspath(p), os.path.realpath(p))})


@lru_cache(maxsize=1)
def _read_roots() -> str:
    """Directories of the running Python installation the sandboxed code may read (stdlib, packages)."""
    chosen: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            chosen.add(paths[key])
    prefixes = tuple(os.path.realpath(p) for p in _prefixes())
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            real = os.path.realpath(entry)
            if any(real == p or real.startswith(p + os.sep) for p in prefixes):
                chosen.add(entry)
    # both forms: the hook checks a path's lexical form and its resolved form
    return os.pathsep.join(sorted({form for p in chosen for form in (os.path.abspath(p), os.path.realpath(p))}))


# ----------------------------------------------------------------------------- the OS boundary

#: Directories the OS boundary shows empty (the caller's files, other temporary files, sockets of
#: daemons under /run); the Python installation is shown again if it lives in one of them.
_HIDDEN = ("/home", "/root", "/tmp", "/var/tmp", "/run", "/mnt", "/media", "/srv")


@dataclass(frozen=True)
class OsBoundary:
    """Whether this machine offers the OS boundary: ``name`` is ``"bubblewrap"`` when it works
    here, else None; ``detail`` is the ``bwrap`` path or why not, ``hint`` how to get it."""

    name: str | None
    detail: str
    hint: str = ""


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@lru_cache(maxsize=1)
def _bwrap_view() -> tuple[str, ...]:
    """The ``bwrap`` options of the filesystem view: all read-only, :data:`_HIDDEN` empty, Python shown."""
    hidden = [d for d in _HIDDEN if os.path.isdir(d) and not os.path.islink(d)]
    shown = {p for p in _prefixes() + _read_roots().split(os.pathsep) if p and os.path.exists(p)}
    shown = {p for p in shown if any(_inside(p, d) for d in hidden)}
    shown = {p for p in shown if not any(q != p and _inside(p, q) for q in shown)}
    view = ["--ro-bind", "/", "/"]
    for d in hidden:
        view += ["--tmpfs", d]
    for p in sorted(shown):
        view += ["--ro-bind", p, p]
    return tuple(view)


def _bwrap_argv(bwrap: str, workdir: str) -> list[str]:
    """The ``bwrap`` command line (ending with ``--``) that confines a process to ``workdir``."""
    argv = [bwrap, *_bwrap_view(), "--bind", workdir, workdir, "--dev", "/dev", "--proc", "/proc",
            "--chdir", workdir, "--unshare-all", "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:  # unprivileged bwrap has no capabilities to drop
        argv += ["--cap-drop", "ALL"]
    return argv + ["--"]


@lru_cache(maxsize=1)
def os_boundary() -> OsBoundary:
    """Whether the OS boundary works on this machine (tried once per process: ``bwrap`` runs Python)."""
    if not sys.platform.startswith("linux"):
        return OsBoundary(None, f"bubblewrap needs Linux (this is {sys.platform})",
                          "run the code in a container or VM, or set RECMAS_SANDBOX=audit")
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return OsBoundary(None, "bubblewrap (bwrap) is not installed", _INSTALL_HINT)
    workdir = tempfile.mkdtemp(prefix="recmas_sandbox_")
    try:
        probe = subprocess.run(_bwrap_argv(bwrap, workdir) + [sys.executable, "-I", "-c", "pass"],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        return OsBoundary(None, f"{bwrap} could not run: {err}", _INSTALL_HINT)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if probe.returncode != 0:
        why = (probe.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {probe.returncode}"])[-1]
        return OsBoundary(None, f"{bwrap} does not work here: {why}",
                          "allow unprivileged user namespaces (e.g. sysctl kernel.unprivileged_userns_clone=1, "
                          "or an AppArmor profile for bwrap on Ubuntu 24.04+), or run as root in a container "
                          "that allows namespaces; else set RECMAS_SANDBOX=audit")
    return OsBoundary("bubblewrap", bwrap)


def default_boundary() -> str:
    """The ``boundary`` :func:`run_python` uses when given none: ``$RECMAS_SANDBOX``, else ``"auto"``."""
    value = os.environ.get(SANDBOX_ENV, "").strip().lower() or "auto"
    if value not in BOUNDARIES:
        raise RecmasError(f"unknown sandbox boundary {value!r}", culprit=SANDBOX_ENV,
                          hint="set it to auto, strict or audit (or unset it)")
    return value


@lru_cache(maxsize=1)
def _say_audit_only(detail: str, hint: str) -> None:
    _log.warning("sandbox: the OS boundary is not available (%s), so code runs behind the audit layer alone; "
                 "fix: %s", detail, hint)


def _limits(memory_mb: int, cpu_s: float, file_mb: int) -> None:  # runs in the child, before exec
    import resource

    def cap(which: int, value: int) -> None:
        try:
            soft, hard = resource.getrlimit(which)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass

    cap(resource.RLIMIT_AS, memory_mb * 1024 * 1024)
    try:
        cpu = max(1, math.ceil(cpu_s))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    except (ValueError, OSError):
        pass
    cap(resource.RLIMIT_FSIZE, file_mb * 1024 * 1024)
    cap(resource.RLIMIT_CORE, 0)


def _read_head(f: "tempfile._TemporaryFileWrapper[bytes]", limit: int) -> tuple[str, bool]:
    f.seek(0)
    data = f.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    more = f.read(1) != b""
    if len(text) > limit or more:
        return text[:limit], True
    return text, False


def _read_tail(f: "tempfile._TemporaryFileWrapper[bytes]", limit: int) -> tuple[str, bool]:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - limit * 4))
    text = f.read().decode("utf-8", errors="replace")
    if len(text) > limit or size > limit * 4:
        return text[-limit:], True
    return text, False


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``proc`` to exit; whether it did. A pidfd wakes at the exit
    itself, where ``Popen.wait(timeout)`` polls with growing sleeps (a run that ends at 32 ms is
    seen at 63.5 ms)."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux 5.3+, or the process is gone already
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(0, math.ceil(timeout_s * 1000))))
    finally:
        os.close(fd)


def _choose_boundary(boundary: str | None) -> tuple[str | None, SandboxResult | None]:
    """The ``bwrap`` path to wrap the run in (None: the audit layer alone), or the refusal to return."""
    if boundary is None:
        boundary = default_boundary()
    elif boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {', '.join(BOUNDARIES)}, not {boundary!r}")
    if boundary == "audit":
        return None, None
    wall = os_boundary()
    if wall.name is not None:
        return wall.detail, None
    if boundary == "strict":
        message = (f"sandbox: boundary 'strict' needs the OS boundary, which is not available: {wall.detail}\n"
                   f"  fix: {wall.hint}")
        return None, SandboxResult(False, "", message, None, "unsupported", 0.0, boundary="none")
    _say_audit_only(wall.detail, wall.hint)
    return None, None


def run_python(
    code: str,
    *,
    timeout_s: float = DEFAULTS["timeout_s"],
    memory_mb: int = int(DEFAULTS["memory_mb"]),
    cpu_s: float | None = None,
    max_output_chars: int = int(DEFAULTS["max_output_chars"]),
    file_mb: int = int(DEFAULTS["file_mb"]),
    boundary: str | None = None,
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a sandboxed child interpreter and return what happened.

    ``timeout_s`` bounds wall time (the process group is killed), ``cpu_s`` CPU time (default:
    ``timeout_s``), ``memory_mb`` the address space, ``file_mb`` any file or output written, and
    ``max_output_chars`` what is kept of stdout (its head) and stderr (its tail). ``boundary`` is
    ``"auto"``, ``"strict"`` or ``"audit"`` (default: ``$RECMAS_SANDBOX``, else ``"auto"``; see the
    module's docstring).
    """
    start = time.perf_counter()
    if os.name != "posix":
        return SandboxResult(False, "", "the sandbox needs a POSIX system (resource limits, process groups)",
                             None, "unsupported", 0.0, boundary="none")
    bwrap, refusal = _choose_boundary(boundary)
    if refusal is not None:
        return refusal
    cpu_limit = timeout_s if cpu_s is None else cpu_s
    workdir = tempfile.mkdtemp(prefix="recmas_sandbox_")
    try:
        with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
            f.write(code)
        env = {
            "PATH": os.defpath,
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
            "HOME": workdir,
            "TMPDIR": workdir,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        argv = [sys.executable, "-I", "-B", "-X", "utf8", "-c", _BOOTSTRAP, workdir, _read_roots()]
        if bwrap is not None:
            argv = _bwrap_argv(bwrap, workdir) + argv
        timed_out = False
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                argv,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
                preexec_fn=lambda: _limits(memory_mb, cpu_limit, file_mb),
            )
            try:
                timed_out = not _wait(proc, timeout_s)
            finally:
                try:  # bwrap's own child dies with it (--die-with-parent), and the namespace with that
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            stdout, cut_out = _read_head(out, max_output_chars)
            stderr, cut_err = _read_tail(err, max_output_chars)
        rc = proc.returncode
        if bwrap is not None and rc is not None and rc > 128:
            rc = 128 - rc  # bwrap exits with 128 + N when its child dies of signal N
        stderr = _BOOTSTRAP_FRAME.sub("", stderr)
        if timed_out:
            reason = "timeout"
        elif rc == 0:
            reason = "ok"
        elif rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and time.perf_counter() - start >= cpu_limit):
            reason = "cpu"
        elif rc == -signal.SIGXFSZ or "[Errno 27] File too large" in stderr[-2000:]:
            reason = "output"
        elif rc is not None and rc < 0:
            reason = "killed"
        elif "MemoryError" in stderr[-2000:]:
            reason = "memory"
        else:
            reason = "error"
        if cut_out:
            stdout += f"\n... [output truncated at {max_output_chars} characters]"
        return SandboxResult(reason == "ok", stdout, stderr, None if timed_out else rc, reason,
                             time.perf_counter() - start, cut_out or cut_err,
                             "bubblewrap" if bwrap is not None else "audit")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
