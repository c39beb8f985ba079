"""fastpose: a fast, dependable trainer for DeeperCut-style keypoint detectors."""

__version__ = "0.1.0"
