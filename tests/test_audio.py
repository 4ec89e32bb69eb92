import numpy as np
import pytest

from engine import AudioError, Limits, MediaError, analyse_audio


def test_speech_opens_and_closes(media):
    track = analyse_audio(media["speech"])
    mouth = track.at_fps(25.0)
    assert len(mouth) == round(track.duration * 25)
    assert mouth.openness.max() > 0.7
    assert (mouth.openness < 0.05).mean() > 0.1  # closures and pauses


def test_b_between_vowels_closes_the_mouth(media):
    """The lips close on /b/ although the voice hums on behind them, and a synthesised
    narration's digital silence does not make every murmur read as open."""
    mouth = analyse_audio(media["aba"]).at_fps(25.0).openness
    first, second = np.flatnonzero(mouth > 0.6)[[0, -1]]
    assert second - first >= 3 and mouth[first:second].min() < 0.15


@pytest.mark.parametrize("name", ["silence", "tone"])
def test_no_speech_keeps_mouth_closed(media, name):
    assert analyse_audio(media[name]).at_fps(25.0).openness.max() == 0.0


def test_pause_closes_mouth(media):
    mouth = analyse_audio(media["pause"]).at_fps(25.0)
    speech_frames = round(analyse_audio(media["speech"]).duration * 25)
    pause = mouth.openness[speech_frames + 5:speech_frames + 45]
    assert pause.max() < 0.02


@pytest.mark.parametrize("name", ["mp3", "m4a", "ogg", "flac"])
def test_formats_rates_and_channels(media, name):
    reference = analyse_audio(media["speech"])
    track = analyse_audio(media[name])
    assert abs(track.duration - reference.duration) < 0.1
    a, b = reference.at_fps(25.0).openness, track.at_fps(25.0).openness
    n = min(len(a), len(b))
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.8


def test_any_fps(media):
    track = analyse_audio(media["speech"])
    for fps in (24.0, 29.97, 60.0):
        assert len(track.at_fps(fps)) == round(track.duration * fps)


def test_empty_audio_is_a_clear_error(media):
    with pytest.raises(AudioError, match="empty"):
        analyse_audio(media["empty"])


def test_overlong_audio_is_a_clear_error(media):
    with pytest.raises(AudioError, match="limit"):
        analyse_audio(media["speech"], Limits(max_audio_seconds=1.0))


def test_not_audio_is_a_clear_error(media):
    with pytest.raises(MediaError, match="notes.mp4"):
        analyse_audio(media["text"])


def test_a_recording_below_speech_rates_is_refused_before_resampling(tmp_path):
    from scipy.io import wavfile

    path = str(tmp_path / "one_hertz.wav")
    wavfile.write(path, 1, np.zeros(30000, np.int16))  # 30000 s at 1 Hz: 480M samples at 16 kHz
    with pytest.raises(MediaError, match="sampled at 1 Hz"):
        analyse_audio(path)
