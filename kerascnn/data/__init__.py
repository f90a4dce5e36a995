"""Datasets, tf.data pipelines, augmentation, P x K batches and test-time augmentation."""

from kerascnn.data.folders import FolderDataset, read_image, scan_folder  # noqa: F401
from kerascnn.data.lfw import PairList, read_pairs, read_people  # noqa: F401
