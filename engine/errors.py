"""Typed errors raised by the engine. Each message says what to do about it."""


class EngineError(Exception):
    """Base class: anything the caller can report to a user as-is."""


class MediaError(EngineError):
    """A file could not be read as audio, video or image."""


class AudioError(EngineError):
    """The narration is unusable (empty, too long)."""


class NoFaceError(EngineError):
    """The template shows no face the engine can track."""
