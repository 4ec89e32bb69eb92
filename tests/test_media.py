import numpy as np

from engine.media import loop_index, looped_frames, probe_video, read_frames


def test_constant_rate_from_variable_rate(media):
    info = probe_video(media["vfr"])
    indices = [k for k, _ in read_frames(media["vfr"], info.fps)]
    assert indices == list(range(len(indices)))
    assert abs(len(indices) - round(info.duration * info.fps)) <= 2


def test_seeking_is_exact(media):
    info = probe_video(media["h264"])
    sequential = dict(read_frames(media["h264"], info.fps))
    for k, image in read_frames(media["h264"], info.fps, 30, 35):
        assert np.array_equal(image, sequential[k])


def test_ping_pong_loop_has_no_jump():
    order = [loop_index(k, 5) for k in range(14)]
    assert order == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3]
    assert all(abs(a - b) == 1 for a, b in zip(order, order[1:]))


def test_looped_frames_follow_loop_order(media):
    info = probe_video(media["h264"])
    frames = dict(read_frames(media["h264"], info.fps))
    n = len(frames)
    # A tiny chunk budget forces the backward pass to be read in several pieces; a large one
    # plays it from the frames kept from the forward pass.
    for frame_bytes in (10**9, 1):
        got = []
        for k, image in looped_frames(media["h264"], info.fps, n, 3 * n + 2, frame_bytes=frame_bytes):
            got.append((k, image.copy()))
            image[:] = 0  # the renderer edits frames in place
        assert [k for k, _ in got] == [loop_index(k, n) for k in range(3 * n + 2)]
        assert all(np.array_equal(image, frames[k]) for k, image in got)
