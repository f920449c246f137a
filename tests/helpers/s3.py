"""moto's S3 on loopback with a log of every request it answers, to count LISTs and PUTs.

    with counting_s3() as (env, log):      # env: the AWS_* variables that point pyarrow at it
        ...
        log.count("PUT", "images/")        # requests whose key (after the bucket) starts with images/
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote


@dataclass(frozen=True)
class S3Request:
    method: str
    bucket: str
    key: str  # the object key, or "" for a bucket-level request (a LIST)
    query: dict[str, list[str]]

    @property
    def kind(self) -> str:
        """LIST, HEAD, GET, PUT (one-shot), MULTIPART (any part of a multipart upload), DELETE, POST."""
        if self.method == "GET" and not self.key:
            return "LIST"
        if "uploads" in self.query or "uploadId" in self.query:
            return "MULTIPART"
        return self.method

    @property
    def prefix(self) -> str:
        """What a LIST lists (its ``prefix``), else the key."""
        return self.query.get("prefix", [""])[0] if self.kind == "LIST" else self.key


@dataclass
class RequestLog:
    requests: list[S3Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: S3Request) -> None:
        with self.lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()

    def count(self, kind: str, under: str = "", bucket: str | None = None) -> int:
        """Requests of ``kind`` whose key (LIST: prefix) lies under ``under`` (relative to the bucket;
        a dataset's prefix included)."""
        with self.lock:
            return sum(1 for r in self.requests if r.kind == kind and (bucket is None or r.bucket == bucket)
                       and _under(r.prefix, under))

    def of(self, kinds: Iterable[str]) -> list[S3Request]:
        wanted = set(kinds)
        with self.lock:
            return [r for r in self.requests if r.kind in wanted]


def _under(path: str, under: str) -> bool:
    return path.startswith(under) or (under.endswith("/") and path == under[:-1])


@contextmanager
def counting_s3() -> Iterator[tuple[dict[str, str], RequestLog]]:
    """moto's S3 app behind a WSGI middleware that logs each request (path-style: /bucket/key)."""
    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    log = RequestLog()

    def logged(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = unquote(environ.get("PATH_INFO", "")).lstrip("/")
        bucket, _, key = path.partition("/")
        log.add(S3Request(environ["REQUEST_METHOD"], bucket, key,
                          parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, logged, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.server_port}"}
    try:
        yield env, log
    finally:
        server.shutdown()
        thread.join(timeout=5)
