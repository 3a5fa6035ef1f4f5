"""Run untrusted Python code in a separate, limited process (the ``python`` tool and code scoring).

:func:`run_python` starts ``sys.executable -I`` in a new session with:

- a fresh temporary directory as its working directory, deleted afterwards;
- an almost empty environment (no variables of the caller, ``HOME`` / ``TMPDIR`` = the directory);
- resource limits set before the interpreter starts: address space (``RLIMIT_AS``), CPU seconds
  (``RLIMIT_CPU``), size of written files and output (``RLIMIT_FSIZE``), no core dumps (no
  ``RLIMIT_NPROC``: Linux counts threads against it, so it would break threaded code, and it is
  per user, not per process; new processes are refused by the audit hook instead);
- a wall-clock timeout after which the whole process group is killed;
- an audit hook (PEP 578) installed by a bootstrap before the code runs, which refuses opening
  files outside the directory (reading the Python installation's own files is allowed, so the
  standard library and installed packages import), writing or deleting outside it, listing other
  directories, starting processes (``subprocess``, ``os.system``, ``os.fork``, ``os.exec*``),
  sockets, signals, native calls through ``ctypes`` (importing it works: sympy needs it) and the
  ``gc`` introspection a hook bypass would need.

It keeps honest model-written code from touching the caller's files, network or processes. It is
not a boundary against a determined attacker with native-code tricks: run hostile code in a
container or VM as well.

>>> run_python("print(1 + 1)").stdout
'2\\n'
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["SandboxResult", "run_python", "DEFAULTS"]

#: Default limits (seconds, MiB, characters).
DEFAULTS: dict[str, float] = {
    "timeout_s": 10.0,
    "memory_mb": 1024,
    "cpu_s": 10.0,
    "max_output_chars": 10_000,
    "file_mb": 16,
}


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    ``reason`` is ``"ok"``, ``"error"`` (non-zero exit, e.g. an exception or a refused operation),
    ``"timeout"`` (wall clock), ``"cpu"`` (CPU seconds), ``"memory"`` (address-space limit),
    ``"output"`` (output or file size limit), ``"killed"`` (another signal) or ``"unsupported"``.
    ``stdout`` keeps the first ``max_output_chars`` characters, ``stderr`` the last ones.
    """

    ok: bool
    stdout: str
    stderr: str
    exit_code: int | None
    reason: str
    elapsed_s: float
    truncated: bool = False

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
            "unsupported": "sandboxing is not supported on this platform",
        }.get(self.reason, f"exited with status {self.exit_code}")
        tail = self.stderr.strip()
        return f"{detail}\n{tail}" if tail else detail


# The bootstrap runs in the child before the user's code: it reads main.py, installs the audit
# hook, and runs the code as __main__. Everything it needs is bound in closures of immutable data.
_BOOTSTRAP = r'''
import sys, os, builtins
def _install():
    realpath, sep, fsdecode = os.path.realpath, os.sep, os.fsdecode
    root = realpath(sys.argv[1])
    read_roots = tuple(realpath(p) for p in sys.argv[2].split(os.pathsep) if p)
    read_files = frozenset(("/dev/null", "/dev/urandom", "/dev/random", "/dev/zero"))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    denied_prefixes = ("subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                       "os.system", "os.kill", "os.killpg", "os.setuid", "os.setgid", "os.startfile",
                       "pty.", "socket.", "ctypes.", "gc.get_", "resource.", "webbrowser.", "urllib.Request",
                       "http.client.", "ftplib.", "smtplib.", "telnetlib.", "imaplib.", "poplib.", "nntplib.",
                       "_winapi.", "winreg.", "msvcrt.", "sys._current_frames", "sys.setprofile",
                       "sys.settrace", "sys.monitoring")
    denied_imports = frozenset(("cffi", "_posixsubprocess"))
    write_events = frozenset(("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.symlink", "os.link",
                              "os.chmod", "os.chown", "os.truncate", "os.utime", "os.setxattr",
                              "os.removexattr", "os.chflags", "os.lchflags", "os.lockf", "shutil.rmtree",
                              "shutil.chown", "os.mkfifo", "os.mknod"))
    read_events = frozenset(("os.listdir", "os.scandir", "os.getxattr", "os.listxattr", "glob.glob",
                             "glob.glob/2", "os.walk", "os.fwalk"))

    def inside(path, roots):
        return any(path == r or path.startswith(r + sep) for r in roots)

    def resolve(p):
        if isinstance(p, int) or p is None:
            return None
        return realpath(fsdecode(p))

    def refuse(what, why):
        raise PermissionError("sandbox: " + what + " refused: " + why)

    def hook(event, args):
        if event == "open":
            path = resolve(args[0])
            if path is None:
                return
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if inside(path, (root,)):
                return
            if not writing and (path in read_files or inside(path, read_roots)):
                return
            refuse("open(%r)" % (args[0],), "only files inside the sandbox directory may be "
                   + ("written" if writing else "read"))
        elif event == "import":
            name = args[0] or ""
            if name.split(".")[0] in denied_imports:
                raise ImportError("sandbox: import of %r refused" % name, name=name)
        elif event == "ctypes.dlopen" and args and args[0] is None:
            return  # ctypes itself opens the running program at import; symbols and calls stay refused
        elif event == "sys.addaudithook":
            raise RuntimeError("sandbox: adding audit hooks is refused")
        elif event in write_events:
            for p in args[:2]:
                if isinstance(p, (str, bytes, os.PathLike)):
                    path = resolve(p)
                    if not inside(path, (root,)):
                        refuse("%s(%r)" % (event, p), "only paths inside the sandbox directory may change")
        elif event in read_events:
            if args and isinstance(args[0], (str, bytes, os.PathLike)):
                path = resolve(args[0])
                if not (inside(path, (root,)) or inside(path, read_roots)):
                    refuse("%s(%r)" % (event, args[0]), "outside the sandbox directory")
        elif event.startswith(denied_prefixes):
            refuse(event, "processes, sockets, signals and native calls are not allowed")

    with open(os.path.join(root, "main.py"), encoding="utf-8") as f:
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


@lru_cache(maxsize=1)
def _read_roots() -> str:
    """Directories of the running Python installation the sandboxed code may read (stdlib, packages)."""
    roots: set[str] = set()
    paths = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        if paths.get(key):
            roots.add(os.path.realpath(paths[key]))
    prefixes = tuple(os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            real = os.path.realpath(entry)
            if any(real == p or real.startswith(p + os.sep) for p in prefixes):
                roots.add(real)
    return os.pathsep.join(sorted(roots))


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


def run_python(
    code: str,
    *,
    timeout_s: float = DEFAULTS["timeout_s"],
    memory_mb: int = int(DEFAULTS["memory_mb"]),
    cpu_s: float | None = None,
    max_output_chars: int = int(DEFAULTS["max_output_chars"]),
    file_mb: int = int(DEFAULTS["file_mb"]),
) -> SandboxResult:
    """Run ``code`` as ``__main__`` in a sandboxed child interpreter and return what happened.

    ``timeout_s`` bounds wall time (the process group is killed), ``cpu_s`` CPU time (default:
    ``timeout_s``), ``memory_mb`` the address space, ``file_mb`` any file or output written, and
    ``max_output_chars`` what is kept of stdout (its head) and stderr (its tail).
    """
    start = time.perf_counter()
    if os.name != "posix":
        return SandboxResult(False, "", "the sandbox needs a POSIX system (resource limits, process groups)",
                             None, "unsupported", 0.0)
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
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()
            stdout, cut_out = _read_head(out, max_output_chars)
            stderr, cut_err = _read_tail(err, max_output_chars)
        rc = proc.returncode
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
                             time.perf_counter() - start, cut_out or cut_err)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
