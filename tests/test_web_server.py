"""`python -m export.serve_web`: what it serves (over real HTTP, no browser) and its bad-input lines.

    python -m pytest -q tests/test_web_server.py
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from common.errors import run_cli
from export import metadata, serve_web
from export.runtime import session
from tests.test_export import export_tiny

ROOT = Path(__file__).resolve().parent.parent
ORT_MISSING = not all((serve_web.ORT_DIST / name).is_file() for name in serve_web.ORT_FILES)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, mnist_dir):  # noqa: F811
    return export_tiny(tmp_path_factory, "lstm-last", mnist_dir)[1]


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, "", b""


@pytest.mark.skipif(ORT_MISSING, reason=f"onnxruntime-web not installed: `npm ci` in {serve_web.WEB}")
def test_serves_the_page_the_model_and_nothing_else(model_path):
    server = serve_web.make_server(model_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        status, kind, body = get(base + "/")
        assert status == 200 and kind == "text/html" and b'src="app.js"' in body
        assert get(base + "/model.onnx")[2] == model_path.read_bytes()
        info = metadata.parse(session(model_path).get_modelmeta().custom_metadata_map, str(model_path))
        served = json.loads(get(base + "/model.json")[2])
        assert served["preprocessing"]["normalize"] is True and served["class_labels"] == info.class_labels
        assert served["preprocessing"]["mean"] == info.preprocessing.mean and served["variant"] == "lstm-last"
        assert get(base + "/ort/ort-wasm-simd-threaded.wasm")[1] == "application/wasm"
        for path in ("/../pyproject.toml", "/export/onnx.py", "/ort/../package.json", "/node_modules/"):
            assert get(base + path)[0] == 404, path
    finally:
        server.shutdown()
        server.server_close()


def test_prints_the_url(model_path):
    if ORT_MISSING:
        pytest.skip(f"onnxruntime-web not installed: `npm ci` in {serve_web.WEB}")
    process = subprocess.Popen([sys.executable, "-m", "export.serve_web", str(model_path), "--port", "0"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving {model_path} at http://127.0.0.1:") and line.rstrip().endswith("(Ctrl-C stops)")
        assert get(line.split(" at ")[1].split(" ")[0])[0] == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/missing.onnx"], "not found"),
    (["{tmp}/notes.onnx"], "is not a loadable ONNX model"),
    (["{model}", "--port", "x"], "invalid int value"),
    (["{model}", "--port", "{busy}"], "is in use; pass another --port"),
    ([], "the following arguments are required: model"),
])
def test_bad_input_is_one_line(model_path, tmp_path, capsys, argv, message):
    if ORT_MISSING and "{model}" in argv:
        pytest.skip(f"onnxruntime-web not installed: `npm ci` in {serve_web.WEB}")
    (tmp_path / "notes.onnx").write_text("not a model")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        argv = [arg.format(tmp=tmp_path, model=model_path, busy=busy.getsockname()[1]) for arg in argv]
        with pytest.raises(SystemExit) as exit_info:
            run_cli(serve_web.main, argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
