import os

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


def _png_header(path, width: int, height: int) -> str:
    """A PNG that declares width x height pixels in a few bytes (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1024)) + chunk(b"IEND", b""))
    return str(path)


def test_oversized_pictures_are_refused_from_their_header(media, tmp_path):
    import pytest

    from engine import Limits, MediaError

    for side in (20000, 100000):  # the second is beyond Pillow's own ceiling
        with pytest.raises(MediaError, match="MP is accepted"):
            probe_video(_png_header(tmp_path / f"bomb{side}.png", side, side))
    with pytest.raises(MediaError, match="320x320 pixels"):
        probe_video(media["h264"], Limits(max_pixels=300 * 300))
    with pytest.raises(MediaError, match="templates up to"):
        probe_video(media["h264"], Limits(max_template_seconds=1.0))
    assert probe_video(media["h264"], Limits(max_pixels=320 * 320)).width == 320


def test_errors_do_not_show_the_servers_folders(media):
    import pytest

    from engine import MediaError

    with pytest.raises(MediaError) as error:
        probe_video(media["text"])
    assert os.path.dirname(media["text"]) not in str(error.value)
    assert str(error.value).startswith("notes.mp4: ")


def test_playlists_that_name_other_files_are_not_followed(media, tmp_path):
    import pytest

    from engine import MediaError

    playlists = {"list.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile://{media['h264']}\n#EXT-X-ENDLIST\n",
                 "list.txt": f"ffconcat version 1.0\nfile {media['h264']}\n",
                 "list.mpd": '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
                             'mediaPresentationDuration="PT1S"><Period><AdaptationSet mimeType="video/mp4">'
                             f'<Representation id="1" bandwidth="1"><BaseURL>file://{media["h264"]}</BaseURL>'
                             '</Representation></AdaptationSet></Period></MPD>'}
    for name, text in playlists.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(MediaError, match="not a readable media file"):
            probe_video(str(tmp_path / name))


def test_every_frame_is_held_to_the_first_ones_size_and_the_limit(tmp_path):
    """A header speaks for the first frame only: later frames may be larger (an MJPEG stream is
    a series of independent pictures)."""
    from fractions import Fraction

    import av
    import cv2
    import pytest

    from engine import Limits, MediaError

    path = str(tmp_path / "grows.avi")
    with av.open(path, "w") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p"
        for index, side in enumerate((64, 64, 256)):
            packet = av.Packet(cv2.imencode(".jpg", np.full((side, side, 3), 128, np.uint8))[1].tobytes())
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, index, index, Fraction(1, 25)
            out.mux(packet)
    assert probe_video(path).width == 64
    with pytest.raises(MediaError, match="changes from 64x64 to 256x256"):
        list(read_frames(path, 25.0))
    with pytest.raises(MediaError, match="frames over 0.0164 MP are refused"):
        list(read_frames(path, 25.0, limits=Limits(max_pixels=128 * 128)))


def test_a_template_that_cannot_be_read_again_is_an_error_not_a_loop(media, monkeypatch):
    """Played backwards, a template is read again from earlier frames; a file whose index sends
    those seeks nowhere yields nothing there."""
    import pytest

    from engine import MediaError
    from engine import media as media_module

    real = media_module.read_frames

    def forward_only(path, fps, start=0, stop=None, limits=media_module.DEFAULT_LIMITS):
        return real(path, fps, start, stop, limits) if start == 0 else iter(())
    monkeypatch.setattr(media_module, "read_frames", forward_only)
    info = probe_video(media["h264"])
    with pytest.raises(MediaError, match="could not be read again"):
        for _ in looped_frames(media["h264"], info.fps, 40, 200, frame_bytes=10**9):  # 4-frame chunks
            pass
