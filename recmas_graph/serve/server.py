"""Running an app with uvicorn: in the foreground (``recmas serve``) or in a thread (:class:`BackgroundServer`).

uvicorn handles SIGTERM and Ctrl-C in the foreground: it stops accepting connections, lets the
running requests finish, then the app's shutdown finishes the batchers' waiting work.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

__all__ = ["BackgroundServer", "free_port", "serve_forever"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _config(app: Any, host: str, port: int, log_level: str, **more: Any) -> Any:
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", **more)


def serve_forever(app: Any, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
                  on_started: Any = None, **config: Any) -> None:
    """Serve ``app`` until SIGTERM or Ctrl-C (graceful: running requests finish). ``on_started(server)``
    is called in a thread once the port is open (``recmas serve`` builds its systems then; setting
    ``server.should_exit`` stops serving)."""
    import uvicorn

    server = uvicorn.Server(_config(app, host, port, log_level, **config))
    if on_started is not None:
        def watch() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                on_started(server)
        threading.Thread(target=watch, name="recmas-serve-start", daemon=True).start()
    server.run()


class BackgroundServer:
    """``app`` served by uvicorn in a daemon thread on ``host:port`` (a free port by default).

    >>> # with BackgroundServer(create_app({"demo": system})) as server: OpenAI(base_url=server.url + "/v1")
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning",
                 **config: Any) -> None:
        import uvicorn

        self.host = host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(_config(app, host, self.port, log_level, **config))
        self._thread = threading.Thread(target=self.server.run, name="recmas-serve", daemon=True)

    @property
    def url(self) -> str:
        """The server's base URL (``http://host:port``)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        """Start serving; return once the port accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Stop gracefully (running requests finish) and wait for the thread."""
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
