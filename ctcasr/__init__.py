"""ctcasr: CTC speech recognition. ``ctcasr.load(model).transcribe(audio)`` for inference
(:mod:`ctcasr.infer`); the ``ctcasr`` command for everything (``ctcasr --help``)."""

__version__ = '0.1.0'


def load(model, **kwargs):
    """Load a model for transcription: see :func:`ctcasr.infer.load`."""
    from ctcasr.infer import load as _load

    return _load(model, **kwargs)
