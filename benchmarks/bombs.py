"""Decompression bombs uploaded as templates to a running gateway: small files that declare huge
pictures.

    python benchmarks/bombs.py

Starts its own gateway, makes each bomb (PNGs of 1.1 MB and 290 KB that really decode to
20000x20000 and 10000x10000 pixels, a JPEG header declaring 60000x60000, an H.264 video of
8192x8192 frames, a Matroska file with 40 streams of 4096x4096 frames), uploads it to
POST /api/v1/templates and prints per bomb: the answer, its time (target < 1 s) and the server's
RSS growth while it was handled (target < 50 MB), sampled every 10 ms, after a warm-up upload has
loaded the face models. The 40-stream file is within the limits; its target is the cost of the
same stream once (the reference row).
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
import zlib
from fractions import Fraction

import av
import numpy as np
import psutil
import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from service import ROOT, Gateway  # noqa: E402


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: str, side: int = 20000) -> str:
    """A valid PNG of side x side black RGB pixels: rows of zeros deflate about 1000:1."""
    packer = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * side)  # filter byte + pixels
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)))
        data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
        handle.write(_chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def jpeg_bomb(path: str, side: int = 60000) -> str:
    """A baseline JPEG header (SOF0) declaring side x side pixels, then a little scan data."""
    sof = struct.pack(">BHHB", 8, side, side, 1) + bytes([1, 0x11, 0])
    quant = bytes([0]) + bytes([1] * 64)
    huffman = bytes([0x00]) + bytes([0, 1] + [0] * 14) + bytes([0]) + bytes([0x10]) + bytes([0, 1] + [0] * 14) + bytes([0])
    segments = [(0xDB, quant), (0xC0, sof), (0xC4, huffman), (0xDA, bytes([1, 1, 0x00, 0, 63, 0]))]
    with open(path, "wb") as handle:
        handle.write(b"\xff\xd8" + b"".join(b"\xff" + bytes([m]) + struct.pack(">H", len(d) + 2) + d for m, d in segments))
        handle.write(b"\0" * 1024 + b"\xff\xd9")
    return path


def video_bomb(path: str, side: int = 8192) -> str:
    """Three black H.264 frames of side x side (a few hundred KB)."""
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25))
        stream.width = stream.height = side
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast"}
        frame = av.VideoFrame.from_ndarray(np.zeros((side * 3 // 2, side), np.uint8), format="yuv420p")
        for _ in range(3):
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def streams_bomb(path: str, streams: int = 40, side: int = 4096) -> str:
    """A Matroska file holding the same short H.264 stream `streams` times (probing used to
    decode a frame of each)."""
    single = video_bomb(path + ".one.mp4", side)
    with av.open(single) as source, av.open(path, "w", format="matroska") as out:
        inputs = source.streams.video[0]
        copies = [out.add_stream_from_template(inputs) for _ in range(streams)]
        for packet in source.demux(inputs):
            if packet.dts is None:
                continue
            for copy in copies:
                clone = av.Packet(bytes(packet))
                clone.pts, clone.dts, clone.time_base, clone.stream = packet.pts, packet.dts, packet.time_base, copy
                clone.is_keyframe = packet.is_keyframe
                out.mux(clone)
    os.remove(single)
    return path


def main() -> int:
    work = tempfile.mkdtemp(prefix="heygem-bombs-")
    bombs = {"png_20000x20000": png_bomb(os.path.join(work, "bomb.png")),
             "png_10000x10000": png_bomb(os.path.join(work, "bomb10k.png"), 10000),
             "jpeg_60000x60000": jpeg_bomb(os.path.join(work, "bomb.jpg")),
             "h264_8192x8192": video_bomb(os.path.join(work, "bomb.mp4")),
             # Not a bomb: the stream below once, what a legitimate 4096x4096 template costs.
             "h264_4096x4096_reference": video_bomb(os.path.join(work, "one.mp4"), 4096),
             "mkv_40_streams_4096x4096": streams_bomb(os.path.join(work, "streams.mkv"))}
    gateway = Gateway(os.path.join(work, "data"), workers=0).start()
    headers = {"Authorization": f"Bearer {gateway.token()}"}
    server = psutil.Process(gateway.process.pid)
    with open(os.path.join(ROOT, "engine", "assets", "astronaut.jpg"), "rb") as handle:  # loads the face models once
        requests.post(gateway.url + "/api/v1/templates", headers=headers, files={"file": ("warm-up.jpg", handle)},
                      timeout=120)
    results, ok = {}, True
    for name, path in bombs.items():
        baseline = server.memory_info().rss
        peak, done = [baseline], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(server.memory_info().rss)
                time.sleep(0.01)
        sampler = threading.Thread(target=sample)
        sampler.start()
        started = time.monotonic()
        with open(path, "rb") as handle:
            answer = requests.post(gateway.url + "/api/v1/templates", headers=headers,
                                   files={"file": (os.path.basename(path), handle)}, timeout=600)
        seconds = time.monotonic() - started
        done.set()
        sampler.join()
        growth = (max(peak) - baseline) / 2**20
        if name.endswith("_reference"):
            pass
        elif name.startswith("mkv_"):  # within the limits: analysed (no face), at a single stream's cost
            ok &= answer.status_code in (201, 400) and growth < 2 * results["h264_4096x4096_reference"]["rss_growth_mb"] + 50
        else:
            ok &= answer.status_code == 400 and seconds < 1 and growth < 50
        results[name] = {"file_kb": round(os.path.getsize(path) / 1024, 1), "status": answer.status_code,
                         "detail": answer.json().get("detail") if answer.headers.get("Content-Type", "").endswith("json")
                         else answer.text[:200], "seconds": round(seconds, 3), "rss_growth_mb": round(growth, 1)}
    gateway.stop()
    print(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
