"""Data: the shipped see-and-hear set (real digit scans and synthesised spoken words), the
stream generator built on it, and the SAYCam-format video loader. See ``README.md`` here.

    from onebigstate.data import StreamConfig, generate_streams, load_seeandhear
    batch = generate_streams(StreamConfig(split="novel", exposures=[1]), n=8, seed=0)
"""
from onebigstate.data.layout import ACTION, AUDIO, IMAGE, NONE, TOKEN, StreamLayout
from onebigstate.data.seeandhear import DataFileError, SeeHearData, SeeHearSplit, load_seeandhear
from onebigstate.data.streams import (StreamBatch, StreamConfig, describe, generate_streams, n_targets,
                                      recall_counts)

__all__ = ["ACTION", "AUDIO", "IMAGE", "NONE", "TOKEN", "DataFileError", "SeeHearData", "SeeHearSplit",
           "StreamBatch", "StreamConfig", "StreamLayout", "describe", "generate_streams", "load_seeandhear",
           "n_targets", "recall_counts"]
