"""The ESC-50 data layer (train/data/): layout and splits, check, stats, show, the feature cache and the download."""
import hashlib
import http.server
import io
import os
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio import AudioFileError, load_audio
from edge.frontend import FrontEnd
from edge_models import tone, write_clip
from train.data.__main__ import main
from train.data.cache import cache_files, precompute
from train.data.check import check_dataset, check_counts
from train.data.download import DownloadError, download, extract, fetch
from train.data.esc50 import BOOK_SPLIT, Clip, DatasetError, cross_validation_splits, find_root, read_clips
from train.data.show import plot_clip
from train.data.stats import class_balance, format_table

ESC50_DIR = os.environ.get("ESC50_DIR")
CSV_HEADER = "filename,fold,target,category,esc10,src_file,take"


def copy_layout(source, to) -> Path:
    """A private, writable copy of an ESC-50 folder (the session fixture must stay untouched)."""
    return Path(shutil.copytree(source, to))


def add_row(root: Path, name: str, fold: int, target: int, category: str = "low_tone"):
    with open(root / "meta" / "esc50.csv", "a") as f:
        f.write(f"{name},{fold},{target},{category},False,999,A\n")


# --- layout and splits ---------------------------------------------------------------------------

def test_read_clips_in_csv_order(fake_esc50):
    clips = read_clips(fake_esc50)
    assert len(clips) == 10
    assert clips[0] == Clip(fake_esc50 / "audio" / "1-100-A-0.wav", 1, 0, "low_tone")
    assert {c.category for c in clips} == {"low_tone", "high_tone"}
    assert all(c.path.is_file() for c in clips)


def test_find_root_accepts_dir_the_downloaded_folder_and_the_github_archive_layout(fake_esc50, tmp_path):
    assert find_root(fake_esc50) == fake_esc50
    copy_layout(fake_esc50, tmp_path / "ESC-50-master")
    assert find_root(tmp_path) == tmp_path / "ESC-50-master"
    assert [c.path.name for c in read_clips(tmp_path)] == [c.path.name for c in read_clips(fake_esc50)]
    assert read_clips(tmp_path)[0].path == tmp_path / "ESC-50-master" / "audio" / "1-100-A-0.wav"
    copy_layout(fake_esc50, tmp_path / "ESC-50")  # what the download unpacks: found first
    assert find_root(tmp_path) == tmp_path / "ESC-50"


def test_missing_or_malformed_dataset_is_named(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path)):
        read_clips(tmp_path)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("name,label\nx.wav,1\n")
    with pytest.raises(DatasetError, match="expected columns"):
        read_clips(tmp_path)
    (tmp_path / "meta" / "esc50.csv").write_text(f"{CSV_HEADER}\nx.wav,one,0,dog,False,1,A\n")
    with pytest.raises(DatasetError, match="bad fold or target"):
        read_clips(tmp_path)


def test_book_split(fake_esc50):
    clips = read_clips(fake_esc50)
    train, valid, test = BOOK_SPLIT.select(clips)
    assert {c.fold for c in train} == {1, 2, 3} and {c.fold for c in valid} == {4} and {c.fold for c in test} == {5}
    assert len(train) + len(valid) + len(test) == len(clips)


def test_cross_validation_splits_are_disjoint_and_cover_every_clip(fake_esc50):
    clips = read_clips(fake_esc50)
    splits = cross_validation_splits()
    assert [s.test_fold for s in splits] == [1, 2, 3, 4, 5]
    tested = []
    for split in splits:
        train, valid, test = split.select(clips)
        assert valid == []
        assert not {c.path for c in train} & {c.path for c in test}
        assert {c.path for c in train} | {c.path for c in test} == {c.path for c in clips}
        tested += test
    assert sorted(c.path for c in tested) == sorted(c.path for c in clips)  # each clip tested exactly once


# --- check ---------------------------------------------------------------------------------------

@pytest.fixture
def broken_esc50(fake_esc50, tmp_path):
    """The fake layout plus one clip per kind of damage; returns (root, {file name: expected problem kind})."""
    root = copy_layout(fake_esc50, tmp_path / "ESC-50")
    audio = root / "audio"
    expected = {}

    add_row(root, "1-900-A-0.wav", 1, 0)
    expected["1-900-A-0.wav"] = "missing"

    whole = write_clip(tmp_path / "whole.wav", 300.0).read_bytes()
    (audio / "1-901-A-0.wav").write_bytes(whole[: len(whole) // 2])
    add_row(root, "1-901-A-0.wav", 1, 0)
    expected["1-901-A-0.wav"] = "truncated"

    (audio / "1-902-A-0.wav").write_text("this is not a wave file\n")
    add_row(root, "1-902-A-0.wav", 1, 0)
    expected["1-902-A-0.wav"] = "not audio"

    write_clip(audio / "1-903-A-0.wav", 300.0, rate=22050)
    add_row(root, "1-903-A-0.wav", 1, 0)
    expected["1-903-A-0.wav"] = "wrong sample rate"

    write_clip(audio / "1-904-A-0.wav", 300.0, seconds=3.0)
    add_row(root, "1-904-A-0.wav", 1, 0)
    expected["1-904-A-0.wav"] = "wrong length"

    write_clip(audio / "1-905-A-1.wav", 300.0)  # the name says class 1, the CSV says 0
    add_row(root, "1-905-A-1.wav", 1, 0)
    expected["1-905-A-1.wav"] = "label mismatch"

    write_clip(audio / "1-906-A-0.wav", 300.0, channels=2)
    add_row(root, "1-906-A-0.wav", 1, 0)
    expected["1-906-A-0.wav"] = "not mono"

    write_clip(audio / "1-907-A-0.wav", 300.0)  # on disk, not in the CSV
    expected["1-907-A-0.wav"] = "unlisted"
    return root, expected


def test_check_names_every_bad_file_with_its_reason(broken_esc50):
    root, expected = broken_esc50
    _, problems = check_dataset(root, full=False)
    found = {(p.path.name, p.kind) for p in problems}
    for name, kind in expected.items():
        assert (name, kind) in found, f"{name} should be reported as {kind}; got {sorted(found)}"
    assert {p.path.name for p in problems} == set(expected)  # and no good clip is blamed
    truncated = next(p for p in problems if p.kind == "truncated")
    assert "header declares" in truncated.detail
    mismatch = next(p for p in problems if p.kind == "label mismatch")
    assert "filename says target 1, CSV says 0" in mismatch.detail


def test_check_cli_prints_every_problem_and_fails(broken_esc50, capsys):
    root, expected = broken_esc50
    assert main(["check", str(root), "--subset"]) == 1
    out, err = capsys.readouterr()
    for name, kind in expected.items():
        assert any(name in line and f": {kind}: " in line for line in out.splitlines()), (name, kind)
    assert "FAILED" in err and f"in {len(expected)} file(s)" in err


def test_check_cli_accepts_a_good_subset_and_demands_the_full_counts_otherwise(fake_esc50, capsys):
    assert main(["check", str(fake_esc50), "--subset"]) == 0
    assert "OK: 10 clips (a subset), 2 classes, 5 folds" in capsys.readouterr().out
    assert main(["check", str(fake_esc50)]) == 1
    assert "10 clips, expected 2000" in capsys.readouterr().out


def test_check_counts_on_a_balanced_and_an_unbalanced_listing(tmp_path):
    balanced = [Clip(tmp_path / f"{fold}-{i}-A-{t}.wav", fold, t, f"c{t}")
                for t in range(50) for fold in range(1, 6) for i in range(8)]
    assert check_counts(balanced, tmp_path / "esc50.csv") == []
    details = [p.detail for p in check_counts(balanced[:-1], tmp_path / "esc50.csv")]
    assert details == ["1999 clips, expected 2000", "class 49 has 39 clips, expected 40",
                       "fold 5 has 399 clips, expected 400"]


def test_check_without_audio_folder(fake_esc50, tmp_path):
    root = copy_layout(fake_esc50, tmp_path / "ESC-50")
    shutil.rmtree(root / "audio")
    _, problems = check_dataset(root, full=False)
    assert [(p.kind, p.path.name) for p in problems] == [("missing", "audio")]


def test_cli_reports_a_missing_dataset_without_a_traceback(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nowhere")]) == 2
    assert "error:" in capsys.readouterr().err


# --- stats and show ------------------------------------------------------------------------------

def test_stats(fake_esc50, capsys):
    balance = class_balance(read_clips(fake_esc50))
    assert balance["total"] == 10 and balance["per_fold"] == [2, 2, 2, 2, 2]
    assert balance["classes"] == [
        {"target": 0, "category": "low_tone", "per_fold": [1, 1, 1, 1, 1], "total": 5},
        {"target": 1, "category": "high_tone", "per_fold": [1, 1, 1, 1, 1], "total": 5}]
    table = format_table(balance)
    assert "low_tone" in table and table.endswith("2 classes, 10 clips; clips per class: 5 each")
    assert main(["stats", str(fake_esc50), "--json"]) == 0
    assert '"total": 10' in capsys.readouterr().out


def test_show_writes_a_png(fake_esc50, tmp_path):
    out = plot_clip(fake_esc50 / "audio" / "1-100-A-0.wav", tmp_path / "figs" / "clip.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["clip.png"]  # no temporary file left


def test_show_cli_names_a_missing_clip(tmp_path, capsys):
    assert main(["show", str(tmp_path / "absent.wav"), "--out", str(tmp_path / "x.png")]) == 2
    assert "absent.wav" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# --- the feature cache ---------------------------------------------------------------------------

def build(root, frontend=FrontEnd(), cache_dir=None, **kw):
    return precompute(root, frontend, cache_dir=cache_dir, jobs=kw.pop("jobs", 1), progress=False, **kw)


def test_precompute_writes_every_clip_keyed_by_the_log_mel_digest(fake_esc50, tmp_path):
    frontend = FrontEnd()
    npy = build(fake_esc50, frontend, tmp_path)
    assert npy == tmp_path / f"logmel-{frontend.log_mel_digest()}.npy"
    cache = np.load(npy)
    clips = read_clips(fake_esc50)
    assert cache.shape == (10, 128, 216) and cache.dtype == np.float32
    for row, clip in zip(cache, clips):
        assert np.array_equal(row, frontend.log_mel(*load_audio(clip.path)))
    other = FrontEnd(n_mels=64)
    assert build(fake_esc50, other, tmp_path) == tmp_path / f"logmel-{other.log_mel_digest()}.npy" != npy
    assert np.load(cache_files(fake_esc50, other, tmp_path)[0]).shape == (10, 64, 216)
    assert npy.is_file()  # the first front end keeps its own cache


def test_front_ends_that_only_make_other_images_from_the_log_mels_share_one_cache(fake_esc50, tmp_path):
    db = FrontEnd(n_mels=64, channels=1, mean=(0.5,), std=(0.25,))
    db_pcen = FrontEnd(n_mels=64, channels=2, mean=(0.5, 0.3), std=(0.25, 0.44), compression="db+pcen")
    npy = build(fake_esc50, db, tmp_path)
    built = npy.stat().st_mtime_ns
    assert build(fake_esc50, db_pcen, tmp_path) == npy and npy.stat().st_mtime_ns == built  # served, not rebuilt
    assert db.digest() != db_pcen.digest()  # the images still differ


def test_default_cache_folder_is_inside_the_dataset(fake_esc50, tmp_path):
    root = copy_layout(fake_esc50, tmp_path / "data" / "ESC-50-master")
    npy = build(tmp_path / "data")
    assert npy.parent == root / "cache"


def test_up_to_date_cache_is_reused_not_rebuilt(fake_esc50, tmp_path):
    npy = build(fake_esc50, cache_dir=tmp_path)
    first = npy.stat().st_ino, npy.stat().st_mtime_ns
    assert build(fake_esc50, cache_dir=tmp_path) == npy
    assert (npy.stat().st_ino, npy.stat().st_mtime_ns) == first
    build(fake_esc50, cache_dir=tmp_path, force=True)
    assert npy.stat().st_ino != first[0]


def test_changed_clip_rebuilds_the_cache(fake_esc50, tmp_path):
    root = copy_layout(fake_esc50, tmp_path / "ESC-50")
    frontend = FrontEnd()
    npy = build(root, frontend)
    clip = read_clips(root)[3]
    write_clip(clip.path, 5000.0)  # same length and format, other content
    build(root, frontend)
    cache = np.load(npy)
    assert np.array_equal(cache[3], frontend.log_mel(*load_audio(clip.path)))


def test_changed_listing_rebuilds_the_cache(fake_esc50, tmp_path):
    root = copy_layout(fake_esc50, tmp_path / "ESC-50")
    build(root)
    write_clip(root / "audio" / "5-300-A-0.wav", 600.0)
    add_row(root, "5-300-A-0.wav", 5, 0)
    assert np.load(build(root)).shape[0] == 11


def test_failed_build_leaves_no_half_file_and_no_stale_index(fake_esc50, tmp_path):
    root = copy_layout(fake_esc50, tmp_path / "ESC-50")
    npy = build(root)
    index = npy.with_suffix(".json")
    bad = read_clips(root)[-1].path
    bad.write_text("not audio any more")
    with pytest.raises(AudioFileError, match=bad.name):
        build(root)
    cache_dir = npy.parent
    assert not index.exists()  # nothing vouches for the old array any more
    assert not [p.name for p in cache_dir.iterdir() if ".tmp" in p.name]
    write_clip(bad, 800.0)
    assert np.load(build(root)).shape == (10, 128, 216)
    assert index.is_file()


def test_parallel_build_equals_serial_build(fake_esc50, tmp_path):
    serial = np.load(build(fake_esc50, cache_dir=tmp_path / "serial", jobs=1))
    parallel = np.load(build(fake_esc50, cache_dir=tmp_path / "parallel", jobs=2))
    assert np.array_equal(serial, parallel)


def test_precompute_cli(fake_esc50, tmp_path, capsys):
    from train.melcnn import FRONTEND as MELCNN_FRONTEND

    assert main(["precompute", str(fake_esc50), "--cache-dir", str(tmp_path), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    for frontend in (FrontEnd(), MELCNN_FRONTEND):
        assert f"logmel-{frontend.log_mel_digest()}.npy" in out


# --- download ------------------------------------------------------------------------------------

def zip_bytes(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def small_archive() -> bytes:
    """An ESC-50-shaped archive: one short clip and its CSV (stored, so it is not tiny)."""
    wav = io.BytesIO()
    sf.write(wav, tone(440.0, 1.0, 44100)[:, 0], 44100, format="WAV")
    return zip_bytes({"ESC-50-master/meta/esc50.csv": f"{CSV_HEADER}\n1-100-A-0.wav,1,0,dog,False,100,A\n",
                      "ESC-50-master/audio/1-100-A-0.wav": wav.getvalue(),
                      "ESC-50-master/README.md": "ESC-50\n"})


class ArchiveServer:
    """A local HTTP server in a thread serving ``body`` at /master.zip, with Range support.

    ``cut_after``: send only that many bytes of the first response (a dropped connection);
    ``ranges``: honour Range requests (False: always send the whole file with 200).
    ``requests`` records the Range header of every request.
    """

    def __init__(self, body: bytes, cut_after: int = None, ranges: bool = True):
        self.body, self.cut_after, self.ranges, self.requests = body, cut_after, ranges, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/master.zip":
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                server.requests.append(wanted)
                start = int(wanted.split("=")[1].rstrip("-")) if wanted and server.ranges else 0
                if start >= len(server.body) > 0 and wanted:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(server.body)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}")
                self.send_header("Content-Length", str(len(server.body) - start))
                self.end_headers()
                data = server.body[start:]
                if server.cut_after is not None:
                    data, server.cut_after = data[:server.cut_after], None
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/master.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_fetches_checks_and_unpacks(tmp_path):
    body = small_archive()
    with ArchiveServer(body) as server:
        root = download(tmp_path, url=server.url, sha256=sha256(body), progress=False)
    assert root == tmp_path / "ESC-50"
    assert [c.path.name for c in read_clips(tmp_path)] == ["1-100-A-0.wav"]
    assert load_audio(root / "audio" / "1-100-A-0.wav")[1] == 44100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ESC-50"]  # no archive, part or staging left


def test_download_is_skipped_when_the_dataset_is_there(tmp_path):
    body = small_archive()
    with ArchiveServer(body) as server:
        download(tmp_path, url=server.url, progress=False)
        assert download(tmp_path, url=server.url, progress=False) == tmp_path / "ESC-50"
        assert len(server.requests) == 1


def test_dropped_connection_then_resume_with_range(tmp_path):
    body = small_archive()
    dest = tmp_path / "master.zip"
    with ArchiveServer(body, cut_after=len(body) // 3) as server:
        with pytest.raises(DownloadError, match="run the command again to resume"):
            fetch(server.url, dest, progress=False)
        part = tmp_path / "master.zip.part"
        assert part.stat().st_size == len(body) // 3 and not dest.exists()
        fetch(server.url, dest, sha256=sha256(body), progress=False)
    assert server.requests == [None, f"bytes={len(body) // 3}-"]
    assert dest.read_bytes() == body and not part.exists()


def test_resume_of_a_partial_file_left_by_an_earlier_run(tmp_path):
    body = small_archive()
    (tmp_path / "master.zip.part").write_bytes(body[:1000])
    with ArchiveServer(body) as server:
        root = download(tmp_path, url=server.url, sha256=sha256(body), progress=False)
    assert server.requests == ["bytes=1000-"]
    assert (root / "meta" / "esc50.csv").is_file()


def test_complete_partial_file_needs_no_more_bytes(tmp_path):
    body = small_archive()
    (tmp_path / "master.zip.part").write_bytes(body)
    with ArchiveServer(body) as server:
        dest = fetch(server.url, tmp_path / "master.zip", sha256=sha256(body), progress=False)
    assert server.requests == [f"bytes={len(body)}-"]  # answered 416: nothing left to send
    assert dest.read_bytes() == body


def test_server_without_range_support_starts_over(tmp_path):
    body = small_archive()
    (tmp_path / "master.zip.part").write_bytes(b"stale bytes from another file")
    with ArchiveServer(body, ranges=False) as server:
        dest = fetch(server.url, tmp_path / "master.zip", progress=False)
    assert dest.read_bytes() == body


def test_sha256_mismatch_is_an_error_and_nothing_is_kept(tmp_path):
    body = small_archive()
    with ArchiveServer(body) as server:
        with pytest.raises(DownloadError, match="SHA-256 is"):
            download(tmp_path, url=server.url, sha256="0" * 64, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_names_the_url(tmp_path):
    with ArchiveServer(b"") as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(tmp_path, url=server.url.replace("master.zip", "missing.zip"), progress=False)


def test_cli_download(tmp_path, capsys):
    body = small_archive()
    with ArchiveServer(body) as server:
        assert main(["download", "--to", str(tmp_path), "--url", server.url, "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "ESC-50")


@pytest.mark.parametrize("evil", ["ESC-50-master/../../evil.txt", "../evil.txt", "/tmp/evil.txt",
                                  "ESC-50-master\\..\\..\\evil.txt", "C:/evil.txt"])
def test_malicious_archive_is_refused_and_nothing_is_extracted(tmp_path, evil):
    body = zip_bytes({"ESC-50-master/meta/esc50.csv": f"{CSV_HEADER}\n", evil: "owned\n"})
    target = tmp_path / "data"
    with ArchiveServer(body) as server:
        with pytest.raises(DownloadError, match="refusing to extract"):
            download(target, url=server.url, progress=False)
    assert [p.name for p in target.iterdir()] == ["master.zip"]  # the archive, nothing unpacked
    assert not list(tmp_path.rglob("evil.txt"))


def test_archive_that_is_not_esc50_or_not_a_zip(tmp_path):
    (tmp_path / "other.zip").write_bytes(zip_bytes({"something/else.txt": "x"}))
    with pytest.raises(DownloadError, match="no ESC-50-master/ folder"):
        extract(tmp_path / "other.zip", tmp_path)
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(DownloadError, match="not a readable zip"):
        extract(tmp_path / "broken.zip", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.zip", "other.zip"]


# --- the real dataset ----------------------------------------------------------------------------

@pytest.mark.realdata
@pytest.mark.skipif(not ESC50_DIR, reason="set ESC50_DIR to an ESC-50 folder")
def test_check_on_the_real_dataset(capsys):
    """The full counts are demanded of the full dataset; CI's 250-clip subset is checked with --subset."""
    full = len(read_clips(ESC50_DIR)) == 2000
    assert main(["check", ESC50_DIR] + ([] if full else ["--subset"])) == 0, capsys.readouterr().out
    assert "OK:" in capsys.readouterr().out


@pytest.mark.realdata
@pytest.mark.skipif(not ESC50_DIR, reason="set ESC50_DIR to an ESC-50 folder")
def test_stats_and_splits_on_the_real_dataset():
    clips = read_clips(ESC50_DIR)
    balance = class_balance(clips)
    assert balance["total"] == len(clips) == sum(balance["per_fold"])
    assert balance["classes"][0]["category"] == "dog"
    train, valid, test = BOOK_SPLIT.select(clips)
    assert len(train) + len(valid) + len(test) == len(clips) and test and valid


@pytest.mark.realdata
@pytest.mark.skipif(not ESC50_DIR, reason="set ESC50_DIR to an ESC-50 folder")
def test_show_on_a_real_clip(tmp_path):
    clip = read_clips(ESC50_DIR)[0]
    assert plot_clip(clip.path, tmp_path / "clip.png").read_bytes()[:4] == b"\x89PNG"
