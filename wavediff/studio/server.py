"""The studio's HTTP server: the page and a small JSON API, on the standard library alone.

    GET  /                              the page
    GET  /api/info                      the model: genres, samplers, defaults, limits
    POST /api/estimate                  {"kind": "generate", ...}: the time a request would take
    POST /api/generate | vary | inpaint | extend | regenerate
                                        queue a request (202 + the job); "wait": true answers when done
    POST /api/upload?name=&bpm=&bars=&genre=
                                        the body is an audio file; it joins the history (to vary or inpaint)
    GET  /api/jobs, /api/jobs/ID        queue position, progress, estimate; the loops once done
    DELETE /api/jobs/ID                 cancel
    GET  /api/loops, /api/loops/ID      the history, newest first; one loop's settings
    GET  /api/loops/ID/audio?format=wav|flac|mp3[&download=1]
                                        a download of a preview-decoded loop decodes it fully first

A refused request answers {"error": message} with 400 (404 for an unknown id). It listens on
127.0.0.1 unless told otherwise; bound to loopback it also refuses requests whose Host header
is not a loopback name (DNS rebinding), and every POST must declare a JSON or audio body, which a
cross-site form cannot send without the browser asking first (and it is not answered).
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from wavediff.errors import UserError
from wavediff.io.audio import encode, load
from wavediff.studio.history import UnknownLoop
from wavediff.studio.jobs import Studio, UnknownJob

MAX_BODY_BYTES = 64 * 2**20  # an upload (a loop, not an album)
AUDIO_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Answer(Exception):
    """An HTTP answer other than 200, raised from a route."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class StudioServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], studio: Studio) -> None:
        self.studio = studio
        self.page = resources.files("wavediff.studio").joinpath("page.html").read_bytes()
        self.check_host = is_loopback(address[0])
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: StudioServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the page polls: no line per request
        pass

    # ----------------------------------------------------------------- plumbing

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        if status >= 400:  # a refused request's body may be unread: the connection cannot be reused
            self.close_connection = True
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _Answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes; at most {MAX_BODY_BYTES}")
        return self.rfile.read(length)

    def _json_body(self) -> Any:
        data = self._body()
        try:
            return json.loads(data or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"the request body is not JSON ({e})") from None

    def _handle(self, route: Any) -> None:
        try:
            if self.server.check_host:
                host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
                if not is_loopback(host):
                    raise _Answer(HTTPStatus.FORBIDDEN, f"host {host!r} refused: the studio answers on loopback only")
            route()
        except _Answer as e:
            self._json({"error": str(e)}, e.status)
        except (UnknownLoop, UnknownJob) as e:
            self._json({"error": str(e)}, HTTPStatus.NOT_FOUND)
        except UserError as e:
            self._json({"error": str(e)}, HTTPStatus.BAD_REQUEST)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away
        except Exception as e:  # a bug: its traceback on the console, one line to the page
            traceback.print_exc()
            self._json({"error": f"internal error: {e!r}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _parts(self) -> tuple[list[str], dict[str, str]]:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        return [p for p in url.path.split("/") if p], query

    # ----------------------------------------------------------------- routes

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_HEAD(self) -> None:
        self._handle(self._get)

    def do_POST(self) -> None:
        self._handle(self._post)

    def do_DELETE(self) -> None:
        self._handle(self._delete)

    def _get(self) -> None:
        parts, query = self._parts()
        studio = self.server.studio
        if not parts:
            self._send(200, self.server.page, "text/html; charset=utf-8")
        elif parts == ["api", "info"]:
            self._json(studio.info())
        elif parts == ["api", "jobs"]:
            self._json(studio.jobs())
        elif len(parts) == 3 and parts[:2] == ["api", "jobs"]:
            self._json(studio.view(studio.job(parts[2])))
        elif parts == ["api", "loops"]:
            self._json(studio.history.records())
        elif len(parts) == 3 and parts[:2] == ["api", "loops"]:
            self._json(studio.history.get(parts[2]))
        elif len(parts) == 4 and parts[:2] == ["api", "loops"] and parts[3] == "audio":
            self._audio(parts[2], query)
        else:
            raise _Answer(HTTPStatus.NOT_FOUND, f"no page {self.path}")

    def _audio(self, loop_id: str, query: dict[str, str]) -> None:
        fmt = query.get("format", "wav")
        if fmt not in AUDIO_TYPES:
            raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(AUDIO_TYPES)}")
        if query.get("download"):  # what leaves the studio is the full decode, never the preview
            self.server.studio.full_decode(loop_id)
        record = self.server.studio.history.get(loop_id)
        path = self.server.studio.history.wav(loop_id)
        if fmt == "wav":  # the file itself, loop chunks and all
            data = path.read_bytes()
        else:
            wav, sr = load(path)
            data = encode(wav, sr, fmt)
        headers = {}
        if query.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="{record["name"]}.{fmt}"'
        self._send(200, data, AUDIO_TYPES[fmt], headers)

    def _post(self) -> None:
        parts, query = self._parts()
        studio = self.server.studio
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if parts == ["api", "upload"]:
            if not (content_type.startswith("audio/") or content_type == "application/octet-stream"):
                raise _Answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send an upload as Content-Type: audio/*")
            name = Path(query.pop("name", "") or "upload.wav").name
            self._json(studio.upload(self._body(), name, query), HTTPStatus.CREATED)
            return
        if content_type != "application/json":
            raise _Answer(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the request as Content-Type: application/json")
        if parts == ["api", "estimate"]:
            body = self._json_body()
            if not isinstance(body, dict):
                raise UserError("a request must be a JSON object")
            body = dict(body)
            kind = body.pop("kind", "generate")
            self._json(studio.estimate(studio.plan(kind, body)))
        elif len(parts) == 2 and parts[0] == "api":
            body = self._json_body()
            job = studio.submit(parts[1], body)
            if isinstance(body, dict) and body.get("wait"):
                job.done.wait()
                self._json(studio.view(job))
            else:
                self._json(studio.view(job), HTTPStatus.ACCEPTED)
        else:
            raise _Answer(HTTPStatus.NOT_FOUND, f"no API {self.path}")

    def _delete(self) -> None:
        parts, _ = self._parts()
        if len(parts) == 3 and parts[:2] == ["api", "jobs"]:
            studio = self.server.studio
            self._json(studio.view(studio.cancel(parts[2])))
        else:
            raise _Answer(HTTPStatus.NOT_FOUND, f"no API {self.path}")


def _stop_on_signals() -> None:
    """Ctrl-C and `kill` (SIGTERM) both stop the studio cleanly, also when it was started in the
    background, where the shell hands SIGINT down ignored and Python would never see Ctrl-C."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, stop)


def serve(studio: Studio, host: str = "127.0.0.1", port: int = 7860) -> int:
    """Serve until Ctrl-C or SIGTERM; warns when bound beyond loopback (the studio has no login)."""
    if not is_loopback(host):
        print(
            f"wavediff studio: warning: listening on {host}, not localhost: anyone who can reach this machine "
            "can use the studio and read its history (it has no login)",
            file=sys.stderr,
            flush=True,
        )
    try:
        server = StudioServer((host, port), studio)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    for skipped in studio.history.skipped:
        print(f"wavediff studio: skipped a history record: {skipped}", file=sys.stderr, flush=True)
    _stop_on_signals()  # before the address is out: whoever reads it may signal at once
    try:
        print(f"wavediff studio: {server.url} (history in {studio.history.folder}; Ctrl-C to stop)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        studio.close()
    return 0
