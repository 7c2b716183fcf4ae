"""A tiny HTTP/1.1 file server with byte ranges, on 127.0.0.1, for remote-file tests.

Python's http.server answers every GET with the whole file; uproot (fsspec's
HTTP filesystem) reads ROOT files by `Range: bytes=a-b` requests, as it does
from a real web server. This one answers HEAD (Content-Length, Accept-Ranges)
and single-range GETs with 206 and Content-Range, and counts what it served.
"""

from __future__ import annotations

import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeServer:
    """Serves the files of `directory` on 127.0.0.1 (a free port) until `close()`."""

    def __init__(self, directory: str, *, slow: dict[str, tuple[int, float]] | None = None
                 ) -> None:
        """`slow`: file name -> (n, seconds): its first n requests each wait `seconds`
        before the answer (a slow server while a client opens the file)."""
        self.directory = directory
        self.slow = dict(slow or {})
        self.served: dict[str, int] = {}  # requests per file name
        self.ranges = 0          # 206 answers given
        self.whole = 0           # 200 answers (a GET without Range)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet test output
                pass

            def _file(self) -> str | None:
                name = os.path.basename(self.path.split("?", 1)[0])
                with server._lock:
                    count = server.served[name] = server.served.get(name, 0) + 1
                n, seconds = server.slow.get(name, (0, 0.0))
                if count <= n:
                    time.sleep(seconds)
                path = os.path.join(server.directory, name)
                if not os.path.isfile(path):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return path

            def do_HEAD(self) -> None:
                path = self._file()
                if path is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(os.path.getsize(path)))
                    self.send_header("Accept-Ranges", "bytes")
                    self.end_headers()

            def do_GET(self) -> None:
                path = self._file()
                if path is None:
                    return
                size = os.path.getsize(path)
                match = _RANGE.match(self.headers.get("Range", "").strip())
                if match is None:
                    start, stop, status = 0, size, 200
                else:
                    first, last = match.groups()
                    if first == "":                      # bytes=-N: the last N bytes
                        start, stop = max(size - int(last), 0), size
                    else:
                        start = int(first)
                        stop = size if last == "" else min(int(last) + 1, size)
                    status = 206
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                with open(path, "rb") as f:
                    f.seek(start)
                    body = f.read(stop - start)
                with server._lock:
                    if status == 206:
                        server.ranges += 1
                    else:
                        server.whole += 1
                self.send_response(status)
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
