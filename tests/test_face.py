import cv2
import numpy as np
import pytest

from engine import MediaError, NoFaceError, prepare_template
from engine import face as face_module
from engine import idle


def test_portrait_and_cache(media, cache_dir, monkeypatch):
    track = prepare_template(media["h264"])
    assert not track.from_cache and track.has_face.all() and track.faces_max == 1
    assert track.frame_count == 40

    def no_analysis(*args, **kwargs):
        raise AssertionError("the face was analysed again")

    monkeypatch.setattr(face_module, "FaceTracker", no_analysis)
    again = prepare_template(media["h264"])
    assert again.from_cache
    np.testing.assert_array_equal(again.points, track.points)


def test_no_face_is_a_clear_error(media, cache_dir):
    with pytest.raises(NoFaceError, match="no face"):
        prepare_template(media["noface"])


def test_close_up_face_is_found(media, cache_dir):
    track = prepare_template(media["closeup"])
    assert track.has_face.all()


def test_several_faces_takes_the_largest(media, cache_dir):
    track = prepare_template(media["twofaces"])
    assert track.faces_max == 2
    assert track.points[0, :, 0].max() < 390  # the big face on the left


def test_unreadable_file_is_a_clear_error(media, cache_dir):
    with pytest.raises(MediaError, match="notes.mp4"):
        prepare_template(media["text"])


def test_portrait_sway_keeps_the_face_bicubic(media, cache_dir):
    """The idle sway is resampled bicubic where the face can be, and bilinear (cheaper) around it."""
    image = cv2.imread(media["portrait"])
    points = prepare_template(media["portrait"]).points[0]
    height, width = image.shape[:2]
    pivot = idle._neck(points)
    box = idle._face_box(points, pivot, (width, height))
    x0, y0, x1, y1 = box
    assert (x1 - x0) * (y1 - y0) < 0.5 * width * height
    for t in np.arange(0.0, 60.0, 0.04):  # a minute of frames: the face never leaves the box
        matrix = idle._sway(t, (width, height), pivot)
        moved = points @ matrix[:, :2].T + matrix[:, 2]
        assert (moved.min(axis=0) >= (x0, y0)).all() and (moved.max(axis=0) <= (x1, y1)).all()
    bicubic = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)
    bilinear = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    swayed = idle._swayed(image, matrix, box)
    # OpenCV's fixed-point coordinates round a shifted box slightly differently: near, not equal.
    inside = np.zeros((height, width), bool)
    inside[y0:y1, x0:x1] = True
    assert np.abs(swayed[inside].astype(int) - bicubic[inside]).max() <= 6
    assert np.abs(swayed[~inside].astype(int) - bilinear[~inside]).max() <= 6
