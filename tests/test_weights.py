"""ImageNet weights download against a local HTTP server: verified, atomic, no file left on any failure."""

import hashlib
import http.server
import socket
import threading

import pytest
from typer.testing import CliRunner

from fastpose import weights
from fastpose.cli import app
from fastpose.errors import UserError

BODY = bytes(range(256)) * 300  # 76800 bytes, more than one read for the short-body case
DIGEST = hashlib.sha256(BODY).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """/good/<file>: BODY; /short/<file>: announces 1000 bytes more than it sends, then closes; else 404."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path.startswith("/good/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path.startswith("/short/"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY) + 1000))
            self.end_headers()
            self.wfile.write(BODY)
            self.close_connection = True
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def table(monkeypatch):
    """Test entries: one with the full digest, one checked by its file-name prefix, one with a wrong digest."""
    monkeypatch.setitem(weights.WEIGHTS, "tinyfull", ("tinyfull-" + DIGEST[:8] + ".pth", DIGEST))
    monkeypatch.setitem(weights.WEIGHTS, "tinyprefix", ("tinyprefix-" + DIGEST[:8] + ".pth", None))
    monkeypatch.setitem(weights.WEIGHTS, "tinywrong", ("tinywrong-" + DIGEST[:8] + ".pth", "0" * 64))
    monkeypatch.setitem(weights.WEIGHTS, "tinywrongprefix", ("tinywrongprefix-12345678.pth", None))


def test_known_weights_embed_their_digest_prefix():
    assert weights.expected_digest("resnet101") == ("63fe2227", False)
    full, is_full = weights.expected_digest("resnet50")
    assert is_full and len(full) == 64 and full.startswith("0676ba61")
    assert weights.canonical_name("resnet_152") == "resnet152" and weights.canonical_name("ResNet-50") == "resnet50"
    with pytest.raises(UserError, match="resnet50, resnet101"):
        weights.canonical_name("vgg16")


@pytest.mark.parametrize("name", ["tinyfull", "tinyprefix"])
def test_download_verifies_and_writes(tmp_path, server, table, name):
    path = weights.download(name, tmp_path / "w", url_base=server + "/good/", progress=False)
    assert path == tmp_path / "w" / f"{name}-{DIGEST[:8]}.pth"
    assert path.read_bytes() == BODY
    assert [p.name for p in (tmp_path / "w").iterdir()] == [path.name]  # no temp file left


def test_verified_copy_is_not_downloaded_again(tmp_path, server, table):
    path = weights.download("tinyfull", tmp_path, url_base=server + "/good/", progress=False)
    # A base that would 404: the existing, verified copy is returned without a request.
    assert weights.download("tinyfull", tmp_path, url_base=server + "/missing/", progress=False) == path


@pytest.mark.parametrize("name", ["tinywrong", "tinywrongprefix"])
def test_wrong_checksum_leaves_nothing(tmp_path, server, table, name):
    with pytest.raises(UserError, match=f"sha256 is {DIGEST}.*deleted"):
        weights.download(name, tmp_path, url_base=server + "/good/", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_leaves_nothing(tmp_path, server, table):
    with pytest.raises(UserError, match=f"dropped after {len(BODY)} bytes of {len(BODY) + 1000}"):
        weights.download("tinyfull", tmp_path, url_base=server + "/short/", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_and_unreachable_server(tmp_path, server, table):
    with pytest.raises(UserError, match="HTTP 404"):
        weights.download("tinyfull", tmp_path, url_base=server + "/missing/", progress=False)
    # A localhost port nobody listens on (bound, then closed): refused at once, no outside network involved.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserError, match="No file was written"):
        weights.download("tinyfull", tmp_path, url_base=f"http://127.0.0.1:{port}/", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_download_prints_init_weights_line(tmp_path, server, table, monkeypatch):
    monkeypatch.setenv(weights.URL_ENV, server + "/good")
    result = CliRunner().invoke(app, ["weights", "download", "tinyprefix", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    path = tmp_path / f"tinyprefix-{DIGEST[:8]}.pth"
    assert path.read_bytes() == BODY
    assert f"init_weights: {path.resolve()}" in result.output.replace("\n", "")
