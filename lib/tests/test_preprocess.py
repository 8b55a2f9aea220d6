"""Preprocessing miniature FF++ / Celeb-DF v2 videos into face crops, resuming, reporting
failures, and reading the output back (the trainer's and evaluator's contract)."""

import json
import os

import numpy as np
import pytest

from dfattn.cli.preprocess import main
from dfattn.data.public import VideoRecord, celebdf, ffpp, load_public_dataset
from dfattn.data.faces import Face, FaceSource
from dfattn.data.folder import crop_face, detect_landmarks, plausible_landmarks, read_image
from dfattn.data.preprocessed import LabelledFrame, PreprocessedFaces, PreprocessedFrames, index
from dfattn.data.video import read_frames
from dfattn.preprocess import preprocess

from test_public import face_video, make_celebdf, make_ffpp, write_video

N_FRAMES = 4  # sampled per 7-frame video: frames 0, 2, 4, 6
CROP = 96
MARGIN = 0.125


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """FF++ + Celeb-DF + an unreadable and a faceless video, preprocessed with 2 workers."""
    base = tmp_path_factory.mktemp("bench")
    records = ffpp(make_ffpp(base / "ffpp")) + celebdf(make_celebdf(base / "cdf"))
    broken = base / "odd" / "broken.mp4"
    broken.parent.mkdir()
    broken.write_bytes(b"\x00\x01 not a video " * 64)
    blank = write_video(base / "odd" / "blank.mp4",
                        np.repeat(np.linspace(40, 200, 160, dtype=np.uint8)[None, None, :, None],
                                  7, 0).repeat(160, 1).repeat(3, 3))
    odd = [VideoRecord(broken, 1, "test", "odd", "fake", "odd/broken"),
           VideoRecord(blank, 0, "test", "odd", "real", "odd/blank")]
    out = base / "out"
    report = preprocess(records + odd, out, frames_per_video=N_FRAMES, size=CROP, margin=MARGIN,
                        workers=2, verbose=False)
    return {"records": records, "odd": odd, "out": out, "report": report}


def test_index_has_a_crop_and_landmarks_for_every_sampled_frame(run):
    out, records = run["out"], run["records"]
    table = index(out)
    assert list(table.columns[:8]) == ["video_id", "frame", "label", "split", "dataset", "method",
                                       "path", "landmarks"]
    assert set(table["video_id"]) == {r.video_id for r in records}  # the odd ones have no rows
    for r in records:
        rows = table[table["video_id"] == r.video_id]
        assert len(rows) == N_FRAMES and rows["frame"].tolist() == [0, 2, 4, 6]
        assert set(rows["label"]) == {r.label} and set(rows["split"]) == {r.split}
        assert set(rows["dataset"]) == {r.dataset} and set(rows["method"]) == {r.method}
    for row in table.itertuples():
        image, lm = read_image(out / row.path), np.load(out / row.landmarks)
        assert image.shape == (CROP, CROP, 3) and lm.shape == (68, 2) and lm.dtype == np.float32
        assert plausible_landmarks(lm, CROP, CROP, slack=0.0)
        # the crop is (1 + 2 margin) x the longer side of the landmark box
        side = float((lm.max(0) - lm.min(0)).max())
        assert side * (1 + 2 * MARGIN) == pytest.approx(CROP, abs=1.5)


def test_crops_are_exactly_detection_plus_crop_of_the_decoded_frames(run):
    out = run["out"]
    record = next(r for r in run["records"] if r.video_id == "celebdf/YouTube-real/00000")
    frames = read_frames(record.path, [0, 6])
    for frame, number in zip(frames, (0, 6)):
        crop, lm = crop_face(frame, detect_landmarks(frame).landmarks, CROP, MARGIN)
        stem = out / record.video_id / f"{number:06d}"
        np.testing.assert_array_equal(read_image(f"{stem}.png"), crop)
        np.testing.assert_array_equal(np.load(f"{stem}.npy"), lm)


def test_unreadable_and_faceless_videos_are_reported(run):
    report, out = run["report"], run["out"]
    assert report.videos == len(run["records"]) + 2 and report.processed == report.videos
    assert report.resumed == 0 and report.partial == []
    assert report.frames == N_FRAMES * len(run["records"])
    (bad,) = report.unreadable
    assert bad["video_id"] == "odd/broken" and "broken.mp4" in bad["error"]
    (none,) = report.no_face
    assert none == {"video_id": "odd/blank", "path": str(run["odd"][1].path),
                    "frames_tried": N_FRAMES}
    assert json.loads((out / "report.json").read_text()) == report.to_dict()


def test_second_run_resumes_and_a_changed_video_is_redone(run):
    out, records = run["out"], run["records"] + run["odd"]
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    before = index(out)
    again = preprocess(records, out, frames_per_video=N_FRAMES, size=CROP, margin=MARGIN,
                       workers=2, verbose=False)
    assert again.processed == 0 and again.resumed == len(records)
    assert (again.unreadable, again.no_face, again.frames) == (
        run["report"].unreadable, run["report"].no_face, run["report"].frames)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps
    assert index(out).equals(before)
    touched = records[0].path
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    third = preprocess(records, out, frames_per_video=N_FRAMES, size=CROP, margin=MARGIN,
                       workers=1, verbose=False)
    assert third.processed == 1 and index(out).equals(before)


def test_new_settings_replace_a_video_and_workers_do_not_change_bytes(run, tmp_path):
    record = run["records"][0]
    first = preprocess([record], tmp_path, frames_per_video=N_FRAMES, size=CROP, margin=MARGIN,
                       workers=1, verbose=False)
    assert first.processed == 1
    folder = tmp_path / record.video_id
    for png in folder.glob("*.png"):  # same bytes as the 2-worker run
        assert png.read_bytes() == (run["out"] / record.video_id / png.name).read_bytes()
    second = preprocess([record], tmp_path, frames_per_video=2, size=64, verbose=False)
    assert second.processed == 1
    assert sorted(p.name for p in folder.glob("*.png")) == ["000000.png", "000006.png"]
    assert read_image(folder / "000006.png").shape == (64, 64, 3)
    assert index(tmp_path)["frame"].tolist() == [0, 6]
    with pytest.raises(ValueError, match="more than once"):
        preprocess([record, record], tmp_path, verbose=False)


def test_preprocessed_faces_are_a_face_source_of_real_frames(run):
    out = run["out"]
    faces = PreprocessedFaces(out, split="train", label=0, size=64)
    assert isinstance(faces, FaceSource)
    # FF++ train reals 000, 001 and Celeb-DF train real id0_0000, 4 frames each
    assert len(faces) == 3 * N_FRAMES
    assert sorted({f.rsplit("/", 1)[0] for f in (faces[i].name for i in range(len(faces)))}) == [
        "celebdf/Celeb-real/id0_0000", "ffpp-c23/youtube/000", "ffpp-c23/youtube/001"]
    assert len(set(faces.identities)) == 3
    face = faces[1]
    assert isinstance(face, Face) and face.image.shape == (64, 64, 3)
    assert face.name == f"{faces.rows.video_id[1]}/{faces.rows.frame[1]}"
    row = faces.rows.iloc[1]
    full = np.load(out / row.landmarks)
    np.testing.assert_allclose(face.landmarks, (full + 0.5) * 64 / CROP - 0.5, atol=1e-4)
    native = PreprocessedFaces(out, split="train", label=0)[1]
    np.testing.assert_array_equal(native.landmarks, full)
    # filters: a dataset family, a method; identities stay those of the whole index
    ff = PreprocessedFaces(out, split=None, label=1, datasets=["ffpp"])
    assert len(ff) == 6 * N_FRAMES and set(ff.rows["method"]) == {"Deepfakes"}
    assert len(PreprocessedFaces(out, split="val", datasets=["celebdf"])) == 0
    sbi = PreprocessedFaces(out, split="train", label=0, methods=["youtube"])
    same = dict(zip(faces.rows["video_id"], faces.identities))
    assert len(sbi) == 2 * N_FRAMES
    assert sbi.identities == [same[v] for v in sbi.rows["video_id"]]


def test_preprocessed_frames_for_video_level_evaluation(run):
    frames = PreprocessedFrames(run["out"], split="test", size=48)
    test_videos = {r.video_id: r.label for r in run["records"] if r.split == "test"}
    assert frames.video_labels() == test_videos
    assert len(frames) == N_FRAMES * len(test_videos)
    item = frames[0]
    assert isinstance(item, LabelledFrame) and item.image.shape == (48, 48, 3)
    assert item.image.dtype == np.uint8 and item.label == test_videos[item.video_id]
    two = PreprocessedFrames(run["out"], split="test", frames_per_video=2)
    assert len(two) == 2 * len(test_videos)
    assert sorted(set(two.rows["frame"])) == [0, 6]  # first and last of the 4 saved
    cdf = PreprocessedFrames(run["out"], datasets=["celebdf"], methods=["Celeb-synthesis"])
    assert set(cdf.rows["video_id"]) == {"celebdf/Celeb-synthesis/id1_id0_0000"}


def test_cli_preprocesses_a_labelled_folder(tmp_path, capsys):
    face_video(tmp_path / "clips" / "a.mp4", 300)
    (tmp_path / "clips" / "labels.csv").write_text("path,label\na.mp4,real\n")
    out = tmp_path / "out"
    argv = ["--dataset", "videos", "--root", str(tmp_path / "clips"), "--out", str(out),
            "--frames", "2", "--size", "64", "--workers", "1", "--quiet"]
    assert main(argv) == 0
    table = index(out)
    assert table["video_id"].tolist() == ["videos/a", "videos/a"]
    assert table["frame"].tolist() == [0, 6] and set(table["split"]) == {"test"}
    assert len(PreprocessedFrames(out)) == 2
    assert main(["--dataset", "celebdf", "--root", str(tmp_path / "nowhere"), "--out",
                 str(out)]) == 1
    assert "nowhere: missing folder" in capsys.readouterr().err
    assert load_public_dataset("videos", tmp_path / "clips")[0].video_id == "videos/a"
