"""Per-modality encoders (image, audio, token, action) and the multimodal router that
turns a stream's steps into ``[B, T, D]`` inputs with their continuous/discrete flags."""
from onebigstate.encoders.audio import AudioEncoder
from onebigstate.encoders.discrete import ActionEncoder, TokenEncoder
from onebigstate.encoders.image import ImageEncoder
from onebigstate.encoders.multimodal import MultimodalEncoder

__all__ = ["ActionEncoder", "AudioEncoder", "ImageEncoder", "MultimodalEncoder", "TokenEncoder"]
