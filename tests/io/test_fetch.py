"""Tests for fetch.py and data_manifest.py: local PNG folder, TIFF stacks, HTTP downloads, atomicity, idempotence.

No test touches the network: downloads go to a ThreadingHTTPServer on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import tifffile

from conftest import ROOT as REPO
from isbi_unet.errors import UserError
from isbi_unet.io import fetch
from isbi_unet.io import manifest as manifest_module

SHARED = REPO / ".." / "shared" / "data" / "isbi2012"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared ISBI data not found at {SHARED}")


# ------------------------------------------------------------------------- helpers


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """relpath -> (inode, mtime_ns, size) for every file under folder."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in folder.rglob("*")
        if p.is_file()
    }


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name or p.name.endswith(".part"))


def synthetic_dataset(n: int = 3, shape=(16, 24), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = {}
    for sub in ("train/image", "train/label", "test"):
        for i in range(n):
            images[f"{sub}/{i}.png"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
    return images


def write_pngs(images: dict[str, np.ndarray], folder: Path) -> dict[str, tuple[str, str]]:
    """Write images as PNGs and return their manifest."""
    manifest = {}
    for rel, img in images.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        skimage.io.imsave(path, img, check_contrast=False)
        manifest[rel] = (manifest_module.file_sha256(path), manifest_module.pixel_sha256(img))
    return manifest


def write_stacks(images: dict[str, np.ndarray], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stack, sub in manifest_module.TIFF_STACKS.items():
        count = sum(1 for rel in images if rel.rpartition("/")[0] == sub)
        pages = [images[f"{sub}/{i}.png"] for i in range(count)]
        tifffile.imwrite(folder / stack, np.stack(pages), photometric="minisblack")


class FaultyHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; paths in ``faults`` answer 404 or a truncated body."""

    faults: dict[str, str] = {}
    requests: list[str] = []

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):
        self.requests.append(self.path)
        fault = self.faults.get(self.path)
        if fault == "404":
            self.send_error(404, "Not Found")
        elif fault == "truncate":
            body = b"\x89PNG\r\n\x1a\n" + b"x" * 100
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body) + 5000))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
        else:
            super().do_GET()


@pytest.fixture
def serve():
    """serve(folder, faults) -> base URL of a local HTTP server for folder."""
    servers = []

    def start(folder: Path, faults: dict[str, str] | None = None) -> str:
        handler = type("Handler", (FaultyHandler,), {"faults": dict(faults or {}), "requests": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ------------------------------------------------------------------- manifest, API


@needs_shared
def test_manifest_matches_shared_sha256sums():
    manifest = manifest_module.load_manifest()
    sums = {}
    for line in (SHARED / "SHA256SUMS").read_text().splitlines():
        sha, rel = line.split()
        sums[rel.removeprefix("./")] = sha
    assert len(manifest) == 90
    assert {rel: v[0] for rel, v in manifest.items()} == sums
    img = skimage.io.imread(SHARED / "test" / "0.png")
    assert manifest_module.pixel_sha256(img) == manifest["test/0.png"][1]


def test_manifest_file_format():
    lines = manifest_module.MANIFEST_PATH.read_text().splitlines()
    assert lines[0] == "path\tfile_sha256\tpixel_sha256"
    assert all(len(line.split("\t")) == 3 for line in lines[1:])
    assert fetch.ISBI_PNG_URL.startswith("https://") and fetch.ISBI_PNG_URL.endswith("/")


def test_load_manifest_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        manifest_module.load_manifest(tmp_path / "nope.tsv")
    bad = tmp_path / "bad.tsv"
    bad.write_text("path\tfile_sha256\tpixel_sha256\ntest/0.png\tabc\n")
    with pytest.raises(UserError, match="line 2"):
        manifest_module.load_manifest(bad)
    bad.write_text("path\tfile_sha256\tpixel_sha256\n../x.png\t" + "0" * 64 + "\t" + "1" * 64 + "\n")
    with pytest.raises(UserError, match="bad path"):
        manifest_module.load_manifest(bad)


def test_pixel_hash_includes_shape():
    a = np.zeros((4, 6), np.uint8)
    assert manifest_module.pixel_sha256(a) != manifest_module.pixel_sha256(a.reshape(6, 4))


def test_default_source(monkeypatch):
    monkeypatch.setenv("UNET_DATA_SOURCE", "/somewhere/else")
    assert fetch.default_source() == "/somewhere/else"
    monkeypatch.delenv("UNET_DATA_SOURCE")
    expected = str(SHARED.resolve()) if SHARED.is_dir() else fetch.ISBI_PNG_URL
    assert fetch.default_source() == expected
    monkeypatch.setattr(fetch, "SHARED_DATA_DIR", Path("/definitely/not/here"))
    assert fetch.default_source() == fetch.ISBI_PNG_URL


# ----------------------------------------------------------------- local PNG folder


@needs_shared
def test_fetch_from_shared_folder_and_idempotent(tmp_path, capsys):
    dest = tmp_path / "membrane"
    assert fetch.fetch_isbi(SHARED, dest, progress=False) == dest
    manifest = manifest_module.load_manifest()
    files = snapshot(dest)
    assert set(files) == set(manifest)
    for rel, (sha, _) in manifest.items():
        assert manifest_module.file_sha256(dest / rel) == sha
    assert leftovers(tmp_path) == []
    capsys.readouterr()

    fetch.fetch_isbi(SHARED, dest, progress=False)
    assert snapshot(dest) == files  # same inodes and mtimes: nothing rewritten
    assert "up to date" in capsys.readouterr().out


@needs_shared
def test_extra_files_kept_and_missing_filled(tmp_path):
    dest = tmp_path / "membrane"
    fetch.fetch_isbi(SHARED, dest, progress=False)
    (dest / "test" / "0_predict.png").write_bytes(b"prediction")
    (dest / "notes.txt").write_text("mine")
    (dest / "train" / "label" / "4.png").unlink()
    (dest / "test" / "29.png").unlink()
    before = snapshot(dest)

    fetch.fetch_isbi(SHARED, dest, progress=False)
    after = snapshot(dest)
    assert set(after) == set(before) | {"train/label/4.png", "test/29.png"}
    assert {rel: after[rel] for rel in before} == before  # untouched, extras included
    assert (dest / "test" / "0_predict.png").read_bytes() == b"prediction"
    assert leftovers(tmp_path) == []


@needs_shared
def test_wrong_hash_in_dest_raises_and_is_not_overwritten(tmp_path):
    dest = tmp_path / "membrane"
    fetch.fetch_isbi(SHARED, dest, progress=False)
    victim = dest / "test" / "5.png"
    skimage.io.imsave(victim, np.zeros((512, 512), np.uint8), check_contrast=False)
    (dest / "train" / "image" / "2.png").unlink()
    before = snapshot(dest)
    with pytest.raises(UserError, match=r"test/5\.png.*remove"):
        fetch.fetch_isbi(SHARED, dest, progress=False)
    assert snapshot(dest) == before  # the missing one is not filled either
    assert leftovers(tmp_path) == []


@needs_shared
def test_checksum_failure_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SHARED, src)
    bad = src / "train" / "label" / "17.png"
    bad.chmod(0o644)
    bad.write_bytes(bad.read_bytes() + b"garbage")
    dest = tmp_path / "out" / "membrane"
    with pytest.raises(UserError, match=r"train/label/17\.png.*checksum"):
        fetch.fetch_isbi(src, dest, progress=False)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


@needs_shared
def test_missing_source_file(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SHARED, src)
    (src / "test" / "12.png").unlink()
    dest = tmp_path / "membrane"
    with pytest.raises(UserError, match=r"test/12\.png"):
        fetch.fetch_isbi(src, dest, progress=False)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_bad_sources(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        fetch.fetch_isbi(tmp_path / "nowhere", tmp_path / "d", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither"):
        fetch.fetch_isbi(tmp_path / "empty", tmp_path / "d", progress=False)
    with pytest.raises(UserError, match="http"):
        fetch.fetch_isbi("ftp://example.invalid/data/", tmp_path / "d", progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        fetch.fetch_isbi(tmp_path / "empty", tmp_path / "file", progress=False)
    assert not (tmp_path / "d").exists() and leftovers(tmp_path) == []


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from isbi_unet.cli import main as cli_main

    assert cli_main.main(["fetch", "--source", str(tmp_path / "nowhere"), "--dest", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nowhere" in err


# ---------------------------------------------------------------------- TIFF stacks


def test_fetch_from_synthetic_tiffs(tmp_path, capsys):
    images = synthetic_dataset()
    manifest = write_pngs(images, tmp_path / "ref")
    write_stacks(images, tmp_path / "tifs")
    dest = tmp_path / "membrane"
    fetch.fetch_isbi(tmp_path / "tifs", dest, manifest=manifest, progress=True)  # exercises keras Progbar
    assert set(snapshot(dest)) == set(manifest)
    for rel, img in images.items():
        np.testing.assert_array_equal(skimage.io.imread(dest / rel), img)
    before = snapshot(dest)
    capsys.readouterr()
    fetch.fetch_isbi(tmp_path / "tifs", dest, manifest=manifest, progress=False)
    assert snapshot(dest) == before
    assert "up to date" in capsys.readouterr().out
    assert leftovers(tmp_path) == []


def test_tiff_pixel_mismatch_and_verify_false(tmp_path, capsys):
    images = synthetic_dataset()
    manifest = write_pngs(images, tmp_path / "ref")
    changed = dict(images)
    changed["train/label/1.png"] = images["train/label/1.png"] ^ 1
    write_stacks(changed, tmp_path / "tifs")
    dest = tmp_path / "membrane"
    with pytest.raises(UserError, match=r"train/label/1\.png.*verify=False"):
        fetch.fetch_isbi(tmp_path / "tifs", dest, manifest=manifest, progress=False)
    assert not dest.exists() and leftovers(tmp_path) == []

    fetch.fetch_isbi(tmp_path / "tifs", dest, manifest=manifest, verify=False, progress=False)
    assert "warning" in capsys.readouterr().err
    np.testing.assert_array_equal(skimage.io.imread(dest / "train/label/1.png"), changed["train/label/1.png"])


def test_tiff_page_count_mismatch(tmp_path):
    images = synthetic_dataset(n=3)
    manifest = write_pngs(images, tmp_path / "ref")
    write_stacks(synthetic_dataset(n=4), tmp_path / "tifs")
    with pytest.raises(UserError, match="4 pages"):
        fetch.fetch_isbi(tmp_path / "tifs", tmp_path / "membrane", manifest=manifest, progress=False)
    assert not (tmp_path / "membrane").exists() and leftovers(tmp_path) == []


@needs_shared
def test_fetch_from_real_tiff_stacks(tmp_path):
    manifest = manifest_module.load_manifest()
    images = {rel: skimage.io.imread(SHARED / rel) for rel in manifest}
    write_stacks(images, tmp_path / "tifs")
    dest = tmp_path / "membrane"
    fetch.fetch_isbi(tmp_path / "tifs", dest, progress=False)
    assert set(snapshot(dest)) == set(manifest)
    for rel, (_, psha) in manifest.items():
        assert manifest_module.pixel_sha256(skimage.io.imread(dest / rel)) == psha
    before = snapshot(dest)
    fetch.fetch_isbi(tmp_path / "tifs", dest, progress=False)  # re-encoded PNGs accepted by pixel hash
    assert snapshot(dest) == before


# ------------------------------------------------------------------------ downloads


@needs_shared
def test_download_from_local_http_server(tmp_path, serve):
    url = serve(SHARED)
    dest = tmp_path / "membrane"
    fetch.fetch_isbi(url, dest, progress=False)
    manifest = manifest_module.load_manifest()
    assert set(snapshot(dest)) == set(manifest)
    assert all(manifest_module.file_sha256(dest / rel) == sha for rel, (sha, _) in manifest.items())
    assert leftovers(tmp_path) == []


@needs_shared
@pytest.mark.parametrize("fault, message", [("404", "HTTP 404"), ("truncate", "cut short")])
def test_download_failure_leaves_nothing(tmp_path, serve, fault, message):
    url = serve(SHARED, {"/train/label/7.png": fault})
    dest = tmp_path / "membrane"
    with pytest.raises(UserError, match=rf"train/label/7\.png.*{message}"):
        fetch.fetch_isbi(url, dest, progress=False)
    assert not dest.exists() and leftovers(tmp_path) == []


@needs_shared
def test_interrupted_download_keeps_existing_dest(tmp_path, serve):
    dest = tmp_path / "membrane"
    fetch.fetch_isbi(SHARED, dest, progress=False)
    for rel in ("train/label/7.png", "test/3.png"):
        (dest / rel).unlink()
    before = snapshot(dest)
    url = serve(SHARED, {"/train/label/7.png": "truncate"})
    with pytest.raises(UserError, match=r"train/label/7\.png"):
        fetch.fetch_isbi(url, dest, progress=False)
    assert snapshot(dest) == before  # test/3.png was not half-filled in either
    assert leftovers(tmp_path) == []


def test_synthetic_download_and_connection_refused(tmp_path, serve):
    images = synthetic_dataset(n=2)
    manifest = write_pngs(images, tmp_path / "site")
    url = serve(tmp_path / "site")
    dest = tmp_path / "membrane"
    fetch.fetch_isbi(url.rstrip("/"), dest, manifest=manifest, progress=False)  # base URL without trailing /
    assert set(snapshot(dest)) == set(manifest)

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UserError, match=r"cannot reach"):
        fetch.fetch_isbi(f"http://127.0.0.1:{port}/", tmp_path / "other", manifest=manifest, progress=False)
    assert not (tmp_path / "other").exists() and leftovers(tmp_path) == []
