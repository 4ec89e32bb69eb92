import numpy as np
import pytest

from engine import MediaError, NoFaceError, prepare_template
from engine import face as face_module


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
