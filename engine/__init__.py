"""Embedded lip-sync engine: narration + template video (or portrait) -> lip-synced H.264 MP4.

Stages, one module each: audio (narration -> mouth track), face (template -> face track, cached),
render (re-posed lower face), media (decode / encode). Entry points are re-exported here.
"""
from .audio import AudioTrack, MouthTrack, analyse_audio
from .errors import AudioError, EngineError, MediaError, NoFaceError
from .face import TemplateTrack, analysis_file, prepare_template
from .media import Limits
from .pipeline import RenderResult, render, render_batch

__all__ = ["AudioTrack", "MouthTrack", "analyse_audio", "AudioError", "EngineError", "MediaError",
           "NoFaceError", "Limits", "TemplateTrack", "analysis_file", "prepare_template", "RenderResult", "render", "render_batch"]
