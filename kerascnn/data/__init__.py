"""Datasets, tf.data pipelines, augmentation, P x K batches and test-time augmentation."""

from kerascnn.data.folders import FolderDataset, read_image, scan_folder  # noqa: F401
from kerascnn.data.lfw import PairList, read_pairs, read_people  # noqa: F401
from kerascnn.data.pipeline import (  # noqa: F401
    PREPROCESSING_MODES, check_image_file, decode_image, make_dataset, preprocess,
)
from kerascnn.data.augment import (  # noqa: F401
    AUGMENTATION_LAYERS, AUGMENTATION_PRESETS, IMAGENET_EIGVAL, IMAGENET_EIGVEC, PCALighting,
    RandomGridDistortion, build_augmentation,
)
from kerascnn.data.splits import identity_split, stratified_split  # noqa: F401
from kerascnn.data.tta import (  # noqa: F401
    ensemble_model, ensemble_predict, flip_predict, ten_crop_predict, ten_crops,
)
