"""Benchmark adapters on miniature official layouts, and frame sampling / reading of videos.

The layout builders here are also used by ``test_preprocess.py``.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dfattn.data.public import (
    VideoRecord,
    celebdf,
    dfd,
    dfdc,
    dfdcp,
    ffpp,
    load_public_dataset,
    parse_label,
    video_folder,
)
from dfattn.data.synthetic import SyntheticFaces
from dfattn.data.video import (
    ShortVideoError,
    frame_count,
    read_frames,
    sample_frame_indices,
    sample_frames,
)

FRAMES = 7  # frames per generated video
SIZE = 160


# --------------------------------------------------------------------------------------------
# Miniature layouts (real, decodable videos of synthetic faces)
# --------------------------------------------------------------------------------------------


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0) -> Path:
    """Write RGB frames ``(T, H, W, 3)`` with OpenCV (mp4v, else MJPG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    for codec in ("mp4v", "MJPG"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
        if writer.isOpened():
            break
    else:
        pytest.skip("OpenCV cannot write mp4v or MJPG videos here")
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def face_video(path: Path, identity: int, n: int = FRAMES) -> Path:
    """A video of ``n`` views of one synthetic person."""
    faces = SyntheticFaces(n, SIZE, seed=11, first_identity=identity, views=n)
    return write_video(path, np.stack([faces[i].image for i in range(n)]))


def make_ffpp(root: Path) -> Path:
    """FF++ (c23) with reals 000-005, Deepfakes of each split pair, and the three split files."""
    pairs = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}
    for i in range(6):
        face_video(root / f"original_sequences/youtube/c23/videos/{i:03d}.mp4", i)
    for split_pairs in pairs.values():
        for a, b in split_pairs:
            for name, who in ((f"{a}_{b}", int(a)), (f"{b}_{a}", int(b))):
                face_video(root / f"manipulated_sequences/Deepfakes/c23/videos/{name}.mp4",
                           100 + who)
    (root / "splits").mkdir(parents=True)
    for split, value in pairs.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(value))
    return root


CDF_VIDEOS = ("Celeb-real/id0_0000.mp4", "Celeb-real/id1_0000.mp4", "YouTube-real/00000.mp4",
              "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0000.mp4")
CDF_TEST_LIST = ("1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n"
                 "1 Celeb-real/id1_0000.mp4\n")


def make_celebdf(root: Path) -> Path:
    for i, rel in enumerate(CDF_VIDEOS):
        face_video(root / rel, 200 + i)
    (root / "List_of_testing_videos.txt").write_text(CDF_TEST_LIST)
    return root


@pytest.fixture(scope="module")
def ffpp_root(tmp_path_factory):
    return make_ffpp(tmp_path_factory.mktemp("ffpp"))


@pytest.fixture(scope="module")
def cdf_root(tmp_path_factory):
    return make_celebdf(tmp_path_factory.mktemp("cdf"))


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


# --------------------------------------------------------------------------------------------
# FaceForensics++ and DeepFakeDetection
# --------------------------------------------------------------------------------------------


def test_ffpp_labels_splits_and_ids_follow_the_split_files(ffpp_root):
    records = ffpp(ffpp_root)
    got = {(r.video_id, r.label, r.split, r.method) for r in records}
    d = "ffpp-c23"
    expected = {
        (f"{d}/youtube/000", 0, "train", "youtube"), (f"{d}/youtube/001", 0, "train", "youtube"),
        (f"{d}/Deepfakes/000_001", 1, "train", "Deepfakes"),
        (f"{d}/Deepfakes/001_000", 1, "train", "Deepfakes"),
        (f"{d}/youtube/002", 0, "val", "youtube"), (f"{d}/youtube/003", 0, "val", "youtube"),
        (f"{d}/Deepfakes/002_003", 1, "val", "Deepfakes"),
        (f"{d}/Deepfakes/003_002", 1, "val", "Deepfakes"),
        (f"{d}/youtube/004", 0, "test", "youtube"), (f"{d}/youtube/005", 0, "test", "youtube"),
        (f"{d}/Deepfakes/004_005", 1, "test", "Deepfakes"),
        (f"{d}/Deepfakes/005_004", 1, "test", "Deepfakes"),
    }
    assert got == expected and len(records) == 12
    assert [r.split for r in records] == ["train"] * 4 + ["val"] * 4 + ["test"] * 4
    for r in records:
        assert r.dataset == d and r.path.is_file()
        assert r.path.stem == r.video_id.rsplit("/", 1)[1]
    assert load_public_dataset("ffpp", ffpp_root, compression="c23") == records


def test_ffpp_options_and_missing_files_are_named(ffpp_root, tmp_path):
    assert {r.method for r in ffpp(ffpp_root, methods=[])} == {"youtube"}
    with pytest.raises(FileNotFoundError, match="FaceSwap"):
        ffpp(ffpp_root, methods=["FaceSwap"])
    with pytest.raises(FileNotFoundError, match="c40"):
        ffpp(ffpp_root, compression="c40")
    with pytest.raises(ValueError, match="compression"):
        ffpp(ffpp_root, compression="c99")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train.json")):
        ffpp(ffpp_root, splits=tmp_path)
    # a split file listing a video that is not there
    (tmp_path / "train.json").write_text('[["000", "009"]]')
    for name in ("val", "test"):
        (tmp_path / f"{name}.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match="009.mp4"):
        ffpp(ffpp_root, splits=tmp_path)
    (tmp_path / "train.json").write_text('{"000": "001"}')
    with pytest.raises(ValueError, match="pairs"):
        ffpp(ffpp_root, splits=tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_public_dataset("ffpp", tmp_path / "nowhere")


def test_ffpp_raw_folder_is_c0(tmp_path):
    for name in ("000", "001"):
        touch(tmp_path / f"original_sequences/youtube/raw/videos/{name}.mp4")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits/train.json").write_text('[["000", "001"]]')
    (tmp_path / "splits/val.json").write_text("[]")
    (tmp_path / "splits/test.json").write_text("[]")
    records = ffpp(tmp_path, compression="c0")
    assert [r.video_id for r in records] == ["ffpp-c0/youtube/000", "ffpp-c0/youtube/001"]


def test_dfd_is_all_test_with_labels_by_folder(tmp_path):
    touch(tmp_path / "original_sequences/actors/c23/videos/01__exit_phone_room.mp4")
    touch(tmp_path / "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit__YVGY8LOK.mp4")
    records = dfd(tmp_path)
    assert [(r.video_id, r.label, r.split, r.method) for r in records] == [
        ("dfd-c23/DeepFakeDetection/01_02__exit__YVGY8LOK", 1, "test", "DeepFakeDetection"),
        ("dfd-c23/actors/01__exit_phone_room", 0, "test", "actors"),
    ]
    with pytest.raises(FileNotFoundError, match="c40"):
        dfd(tmp_path, compression="c40")


# --------------------------------------------------------------------------------------------
# Celeb-DF v2
# --------------------------------------------------------------------------------------------


def test_celebdf_test_list_with_inverted_labels(cdf_root):
    records = celebdf(cdf_root)
    assert [(r.video_id, r.label, r.split, r.method) for r in records] == [
        ("celebdf/Celeb-real/id0_0000", 0, "train", "Celeb-real"),
        ("celebdf/Celeb-synthesis/id0_id1_0000", 1, "train", "Celeb-synthesis"),
        ("celebdf/Celeb-real/id1_0000", 0, "test", "Celeb-real"),
        ("celebdf/Celeb-synthesis/id1_id0_0000", 1, "test", "Celeb-synthesis"),
        ("celebdf/YouTube-real/00000", 0, "test", "YouTube-real"),
    ]
    assert all(r.dataset == "celebdf" and r.path.is_file() for r in records)


def test_celebdf_bad_lists_are_errors(tmp_path):
    for rel in CDF_VIDEOS:
        touch(tmp_path / rel)
    with pytest.raises(FileNotFoundError, match="List_of_testing_videos.txt"):
        celebdf(tmp_path)
    listing = tmp_path / "List_of_testing_videos.txt"
    listing.write_text("0 Celeb-real/id0_0000.mp4\n")  # 0 = fake in that file
    with pytest.raises(ValueError, match=r"List_of_testing_videos.txt:1: listed as fake"):
        celebdf(tmp_path)
    listing.write_text("1 Celeb-real/id9_0000.mp4\n")
    with pytest.raises(FileNotFoundError, match="id9_0000.mp4"):
        celebdf(tmp_path)
    listing.write_text("\n1 Celeb-real/id0_0000.mp4 extra\n")
    with pytest.raises(ValueError, match=":2: expected"):
        celebdf(tmp_path)


# --------------------------------------------------------------------------------------------
# DFDC, DFDC Preview, any folder
# --------------------------------------------------------------------------------------------


def test_dfdc_metadata_parts_and_test_labels(tmp_path):
    part = tmp_path / "dfdc_train_part_0"
    part.mkdir()
    (part / "metadata.json").write_text(json.dumps({
        "aaa.mp4": {"label": "FAKE", "split": "train", "original": "bbb.mp4"},
        "bbb.mp4": {"label": "REAL", "split": "train"},
    }))
    test = tmp_path / "test"
    (test / "videos").mkdir(parents=True)
    (test / "labels.csv").write_text("filename,label\nccc.mp4,1\nddd.mp4,0\n")
    for path in (part / "aaa.mp4", part / "bbb.mp4", test / "ccc.mp4", test / "videos/ddd.mp4"):
        touch(path)
    records = load_public_dataset("dfdc", tmp_path)
    assert [(r.video_id, r.label, r.split, r.method) for r in records] == [
        ("dfdc/dfdc_train_part_0/aaa", 1, "train", "fake"),
        ("dfdc/dfdc_train_part_0/bbb", 0, "train", "real"),
        ("dfdc/test/ccc", 1, "test", "fake"),
        ("dfdc/test/videos/ddd", 0, "test", "real"),
    ]
    assert records[3].path == test / "videos/ddd.mp4"
    (part / "bbb.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="bbb.mp4"):
        dfdc(tmp_path)
    touch(part / "bbb.mp4")
    (test / "labels.csv").write_text("filename,label\nccc.mp4,maybe\n")
    with pytest.raises(ValueError, match=r"labels.csv \(ccc.mp4\).*maybe"):
        dfdc(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no DFDC labels.csv or metadata.json"):
        dfdc(tmp_path / "empty")


def test_dfdcp_dataset_json(tmp_path):
    entries = {
        "method_A/643049/643049_A/1955.mp4": {"label": "fake", "set": "train"},
        "method_B/1224068/1224068_C_001/1810.mp4": {"label": "fake", "set": "test"},
        "original_videos/643049/1955.mp4": {"label": "real", "set": "test"},
    }
    for rel in entries:
        touch(tmp_path / rel)
    (tmp_path / "dataset.json").write_text(json.dumps(entries))
    records = dfdcp(tmp_path)
    assert [(r.video_id, r.label, r.split, r.method) for r in records] == [
        ("dfdcp/method_A/643049/643049_A/1955", 1, "train", "method_A"),
        ("dfdcp/method_B/1224068/1224068_C_001/1810", 1, "test", "method_B"),
        ("dfdcp/original_videos/643049/1955", 0, "test", "original_videos"),
    ]
    entries["original_videos/643049/1955.mp4"]["label"] = "fake"
    (tmp_path / "dataset.json").write_text(json.dumps(entries))
    with pytest.raises(ValueError, match="original_videos holds real"):
        dfdcp(tmp_path)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        dfdcp(tmp_path)


def test_video_folder_with_labels_csv(tmp_path):
    for rel in ("a/one.mp4", "b/two.avi", "three.mp4"):
        touch(tmp_path / rel)
    (tmp_path / "labels.csv").write_text(
        "path,label,split\na/one.mp4,real,train\nb/two.avi,1,\nthree.mp4,FAKE,val\n")
    records = video_folder(tmp_path, dataset="mine")
    assert [(r.video_id, r.label, r.split, r.method, r.dataset) for r in records] == [
        ("mine/a/one", 0, "train", "real", "mine"),
        ("mine/three", 1, "val", "fake", "mine"),
        ("mine/b/two", 1, "test", "fake", "mine"),
    ]
    other = tmp_path / "other.csv"
    other.write_text(f"path,label,method\n{tmp_path / 'three.mp4'},0,camera\n")
    (record,) = load_public_dataset("videos", tmp_path, labels=other)
    assert (record.video_id, record.label, record.method, record.split) == (
        "videos/three", 0, "camera", "test")
    other.write_text("file,label\nthree.mp4,0\n")
    with pytest.raises(ValueError, match=r"other.csv: missing column\(s\) \['path'\]"):
        video_folder(tmp_path, labels=other)
    other.write_text("path,label\nthree.mp4,2\n")
    with pytest.raises(ValueError, match=r"other.csv:2: label"):
        video_folder(tmp_path, labels=other)


def test_registry_rejects_unknown_names_and_options(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'ff'"):
        load_public_dataset("ff", tmp_path)
    with pytest.raises(ValueError, match=r"'celebdf' takes options \[\], got \['compression'\]"):
        load_public_dataset("celebdf", tmp_path, compression="c23")
    assert parse_label(" Fake ", "x") == 1 and parse_label(0, "x") == 0
    with pytest.raises(ValueError, match="split"):
        VideoRecord(tmp_path, 0, "training", "d", "m", "d/x")


# --------------------------------------------------------------------------------------------
# Video reading
# --------------------------------------------------------------------------------------------


def test_sample_frame_indices_known_values():
    assert sample_frame_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_frame_indices(7, 4).tolist() == [0, 2, 4, 6]
    idx = sample_frame_indices(300, 32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 299 and (np.diff(idx) > 0).all()
    assert sample_frame_indices(3, 32).tolist() == [0, 1, 2]
    assert sample_frame_indices(10, 3, "first").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="mode"):
        sample_frame_indices(10, 3, "random")


@pytest.fixture(scope="module")
def grey_video(tmp_path_factory):
    """Eight flat frames of grey 20 * (i + 1): each frame says its own index."""
    frames = np.stack([np.full((48, 64, 3), 20 * (i + 1), np.uint8) for i in range(8)])
    return write_video(tmp_path_factory.mktemp("video") / "grey.mp4", frames)


def test_read_frames_returns_the_requested_frames_in_order(grey_video):
    assert frame_count(grey_video) == 8
    frames = read_frames(grey_video, [5, 1, 1, 7])
    assert frames.shape == (4, 48, 64, 3) and frames.dtype == np.uint8
    np.testing.assert_allclose(frames.reshape(4, -1).mean(1), [120, 40, 40, 160], atol=3)
    indices, sampled = sample_frames(grey_video, 3)
    assert indices.tolist() == [0, 3, 7]
    np.testing.assert_allclose(sampled.reshape(3, -1).mean(1), [20, 80, 160], atol=3)


def test_short_stream_is_resampled_from_its_true_length(grey_video, monkeypatch):
    with pytest.raises(ShortVideoError, match="grey.mp4: frame 9 requested") as err:
        read_frames(grey_video, [2, 9])
    assert err.value.n_frames == 8
    monkeypatch.setattr("dfattn.data.video.frame_count", lambda path: 20)  # a lying header
    indices, frames = sample_frames(grey_video, 2)
    assert indices.tolist() == [0, 7] and len(frames) == 2


def test_unreadable_and_missing_videos_are_named(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 50)
    with pytest.raises(ValueError, match="bad.mp4"):
        frame_count(bad)
    with pytest.raises(ValueError, match="bad.mp4"):
        read_frames(bad, [0])
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        read_frames(tmp_path / "gone.mp4", [0])
