"""Narration -> mouth-shape track.

Language independent: the track comes from the spectrum, not from recognised words. The mouth's
opening follows the loudness of the 500-3000 Hz band (the first formant of open vowels, which
rises as the jaw drops, up through the third), measured against the recording's own noise floor
and speech level: pauses and the closures of p and b read as a closed mouth (a voiced /b/ hums
below 500 Hz, behind closed lips), nasals (m, n) as partly open, fricatives (s, f), whose energy
sits above the band, as nearly closed. Measured choices are in the README.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, minimum_filter1d

from .errors import AudioError
from .media import ANALYSIS_RATE, DEFAULT_LIMITS, Limits, load_pcm

HOP_SECONDS = 0.01
WINDOW = 400  # 25 ms at 16 kHz
FFT = 512
# The mouth shows a sound slightly before it is heard (lips and jaw move ahead of the airflow).
LEAD_SECONDS = 0.03
MAX_SPAN_DB = 60.0  # speech level over the noise floor, at most


@dataclass(frozen=True)
class MouthTrack:
    """Per-video-frame mouth openness: 0 (closed) .. 1 (this speaker's widest)."""

    fps: float
    openness: np.ndarray

    def __len__(self) -> int:
        return len(self.openness)


@dataclass(frozen=True)
class AudioTrack:
    """What the renderer needs from a narration, at 100 Hz."""

    path: str
    duration: float
    openness: np.ndarray
    rms_db: np.ndarray

    def frame_count(self, fps: float) -> int:
        return max(1, int(round(self.duration * fps)))

    def at_fps(self, fps: float, lead: float = LEAD_SECONDS) -> MouthTrack:
        """Resample to video frames. Each frame averages its own 1/fps window, but a closure
        inside the window wins, so a 40 ms p/b/m closure still shows at 25 fps."""
        n = self.frame_count(fps)
        centers = (np.arange(n) / fps + lead) / HOP_SECONDS
        half = 0.5 / fps / HOP_SECONDS
        idx = np.clip(np.round(centers[:, None] + np.linspace(-half, half, 5)[None, :]).astype(int),
                      0, len(self.openness) - 1)
        window = self.openness[idx]
        openness = 0.6 * window.mean(axis=1) + 0.4 * window.min(axis=1)
        return MouthTrack(fps, openness.astype(np.float32))


def _power_spectrogram(pcm: np.ndarray) -> np.ndarray:
    hop = int(ANALYSIS_RATE * HOP_SECONDS)
    padded = np.pad(pcm, (WINDOW // 2, WINDOW // 2 + hop))
    count = max(1, (len(padded) - WINDOW) // hop)
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(count, WINDOW), strides=(padded.strides[0] * hop, padded.strides[0]))
    spectrum = np.fft.rfft(frames * np.hanning(WINDOW).astype(np.float32), FFT, axis=1)
    return (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)


def _band(power: np.ndarray, low: float, high: float) -> np.ndarray:
    bin_hz = ANALYSIS_RATE / FFT
    return power[:, int(low / bin_hz):int(math.ceil(high / bin_hz)) + 1]


def _db(x: np.ndarray) -> np.ndarray:
    return 10.0 * np.log10(x + 1e-10)


def mouth_features(pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(openness, rms_db) at 100 Hz from 16 kHz mono samples."""
    power = _power_spectrogram(pcm)
    formant_db = _db(_band(power, 500, 3000).sum(axis=1))
    rms_db = _db(_band(power, 80, 7500).sum(axis=1))
    speech = np.percentile(formant_db, 97)
    # Synthesised narrations pause in digital silence, which would put the floor ~130 dB below
    # speech and open the mouth on every murmur; recordings span 37-61 dB here.
    floor = max(np.percentile(formant_db, 5), speech - MAX_SPAN_DB)
    span = speech - floor
    if span < 12.0:
        # No loud stretch stands out of the floor: silence, steady noise or a tone.
        openness = np.zeros(len(formant_db), np.float32)
    else:
        start = floor + 0.35 * span
        openness = np.clip((formant_db - start) / (speech - start), 0.0, 1.0)
        openness = gaussian_filter1d(openness, 1.5)
        # Short dips (stop closures) survive the smoothing.
        openness = np.minimum(openness, minimum_filter1d(gaussian_filter1d(openness, 0.7), 3) + 0.15)
    return openness.astype(np.float32), rms_db.astype(np.float32)


def analyse_audio(path: str, limits: Limits = DEFAULT_LIMITS) -> AudioTrack:
    """Read and analyse a narration once; the result drives any number of templates."""
    name = os.path.basename(path)
    pcm = load_pcm(path, max_seconds=limits.max_audio_seconds)
    duration = len(pcm) / ANALYSIS_RATE
    if duration < 0.1:
        raise AudioError(f"{name}: the narration is empty ({duration:.2f} s of audio); send a recording with speech")
    openness, rms_db = mouth_features(pcm)
    return AudioTrack(path, duration, openness, rms_db)
