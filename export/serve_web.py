"""Serve the draw-a-digit page (export/web/) with an exported model, on localhost, offline.

    python -m export.serve_web model.onnx [--port 8000] [--host 127.0.0.1]
    make web MODEL=model.onnx

The page runs the model in the browser with onnxruntime-web (WASM), served from
export/web/node_modules (`npm ci` in export/web installs the pinned version; no CDN). The
server sends only: the page, app.js, onnxruntime-web's files, the model, and its metadata as
model.json (preprocessing and class labels, read here from the .onnx file). Ctrl-C stops it.
"""
from __future__ import annotations

import errno
import json
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Sequence

from common.errors import UserError, run_cli
from common.cli import Parser
from export.predict import open_model

WEB = Path(__file__).resolve().parent / "web"
ORT_DIST = WEB / "node_modules" / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
TYPES = {".html": "text/html", ".js": "text/javascript", ".mjs": "text/javascript", ".wasm": "application/wasm",
         ".json": "application/json", ".onnx": "application/octet-stream"}


def routes(model_path: Path) -> dict[str, tuple[Path | bytes, str]]:
    """URL path -> (file or bytes, content type) for everything the page needs."""
    _, info = open_model(model_path)  # a whole-sequence model of ours, or a one-line error
    missing = [name for name in ORT_FILES if not (ORT_DIST / name).is_file()]
    if missing:
        raise UserError(f"onnxruntime-web is not installed ({ORT_DIST / missing[0]} missing); "
                        f"run `npm ci` in {WEB} (or `make web`)")
    meta = {"variant": info.variant, "preprocessing": json.loads(info.props["preprocessing"]),
            "class_labels": info.class_labels, "source_sha256": info.source_sha256}
    table = {"/": (WEB / "index.html", TYPES[".html"]), "/app.js": (WEB / "app.js", TYPES[".js"]),
             "/model.onnx": (model_path, TYPES[".onnx"]), "/model.json": (json.dumps(meta).encode(), TYPES[".json"])}
    table.update({f"/ort/{name}": (ORT_DIST / name, TYPES[Path(name).suffix]) for name in ORT_FILES})
    return table


class Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, table: dict, **kwargs):
        self.table = table
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (http.server's name)
        found = self.table.get(self.path.split("?")[0].replace("/index.html", "/"))
        if found is None:
            self.send_error(404, "not part of the page")
            return
        body, kind = found
        payload = body if isinstance(body, bytes) else body.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):  # quiet: one line per request is noise here
        pass


def make_server(model_path: str | Path, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """A server for the page and `model_path` (port 0: any free port; see server.server_address)."""
    model_path = Path(model_path)
    table = routes(model_path)
    try:
        return ThreadingHTTPServer((host, port), partial(Handler, table=table))
    except OSError as error:
        why = "is in use; pass another --port (0: any free one)" if error.errno == errno.EADDRINUSE else str(error)
        raise UserError(f"cannot listen on {host}:{port}: {why}") from None


def main(argv: Sequence[str] | None = None) -> None:
    parser = Parser(prog="python -m export.serve_web", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a whole-sequence .onnx file written by `python -m export.onnx`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free one)")
    args = parser.parse_args(argv)
    server = make_server(args.model, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"serving {args.model} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    run_cli(main)
