"""Speech synthesis with espeak-ng through ``ctypes``, from the ``espeakng-loader`` wheel
(which bundles ``libespeak-ng`` and its voice data, so no system package is needed).

Used by ``scripts/make_seeandhear.py`` to regenerate the shipped spoken words. The library
keeps one global engine per process; :class:`Espeak` initialises it once and serialises
every call through it.

    >>> tts = Espeak()                                           # doctest: +SKIP
    >>> wave = tts.synth("seven", voice="en-us+f2", rate=175, pitch=50)  # doctest: +SKIP
    >>> wave.dtype, tts.sample_rate                              # doctest: +SKIP
    (dtype('float32'), 22050)
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

# espeak_AUDIO_OUTPUT, espeak_PARAMETER, espeak_POSITION_TYPE and flag values from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded, or refused a voice or a text."""


class Espeak:
    """The process-wide espeak-ng engine (synchronous synthesis into a numpy buffer)."""

    _lock = threading.Lock()
    _lib: ctypes.CDLL | None = None
    _sample_rate: int = 0
    _chunks: list[np.ndarray] = []
    _callback = None

    def __init__(self) -> None:
        with Espeak._lock:
            if Espeak._lib is None:
                Espeak._load()

    @staticmethod
    def _load() -> None:
        try:
            import espeakng_loader
        except ImportError as e:
            raise EspeakError("espeak-ng needs the 'espeakng-loader' package (pip install espeakng-loader)") from e
        path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise EspeakError(f"cannot load libespeak-ng from {path}: {e}") from e
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data at {espeakng_loader.get_data_path()}")

        def collect(wav, n, events):  # called by espeak-ng with each block of 16-bit samples
            if n > 0:
                Espeak._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        Espeak._callback = _CALLBACK(collect)
        lib.espeak_SetSynthCallback(Espeak._callback)
        Espeak._lib, Espeak._sample_rate = lib, rate

    @property
    def sample_rate(self) -> int:
        return Espeak._sample_rate

    @property
    def version(self) -> str:
        return Espeak._lib.espeak_Info(None).decode()

    def synth(self, text: str, voice: str = "en", rate: int = 175, pitch: int = 50,
              pitch_range: int = 50, volume: int = 100) -> np.ndarray:
        """Waveform ``[S]`` float32 in [-1, 1] at :attr:`sample_rate` of ``text`` spoken by
        ``voice`` (a language and optional variant, e.g. ``"en-gb-scotland+m3"``), at
        ``rate`` words per minute and ``pitch`` in 0..100."""
        lib = Espeak._lib
        with Espeak._lock:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"espeak-ng has no voice {voice!r}")
            for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                                 (_PARAM_RANGE, pitch_range), (_PARAM_VOLUME, volume)):
                if lib.espeak_SetParameter(param, int(value), 0) != 0:
                    raise EspeakError(f"espeak-ng refused parameter {param} = {value}")
            Espeak._chunks.clear()
            data = text.encode("utf-8")
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if err != 0:
                raise EspeakError(f"espeak_Synth failed ({err}) on {text!r} with voice {voice!r}")
            chunks, Espeak._chunks = Espeak._chunks, []
        if not chunks:
            raise EspeakError(f"espeak-ng produced no samples for {text!r} with voice {voice!r}")
        return (np.concatenate(chunks).astype(np.float32) / 32768.0)
