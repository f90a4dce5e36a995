"""Exact parameter counts: keras.applications' (REFERENCE.md, 224x224x3, 1000 classes, BN
moving statistics included) and the papers' for LeNet-5 and AlexNet.

Each model is built once, with its top; the count without the top is that of the same graph cut
at the final feature map (the layer ``include_top=False`` ends with, ``feature_info[-1]``).
"""

from __future__ import annotations

import keras
import pytest

import kerascnn

REFERENCE = {  # name: (include_top=True, include_top=False)
    "vgg16": (138_357_544, 14_714_688),
    "vgg19": (143_667_240, 20_024_384),
    "resnet50": (25_636_712, 23_587_712),
    "resnet101": (44_707_176, 42_658_176),
    "resnet152": (60_419_944, 58_370_944),
    "resnet50_v2": (25_613_800, 23_564_800),
    "resnet101_v2": (44_675_560, 42_626_560),
    "resnet152_v2": (60_380_648, 58_331_648),
    "inception_v3": (23_851_784, 21_802_784),
    "mobilenet": (4_253_864, 3_228_864),
    "mobilenet_v2": (3_538_984, 2_257_984),
    "densenet121": (8_062_504, 7_037_504),
    "densenet169": (14_307_880, 12_642_880),
    "densenet201": (20_242_984, 18_321_984),
}
HEAVY = {"resnet101", "resnet152", "resnet101_v2", "resnet152_v2", "densenet169", "densenet201"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in REFERENCE]
)
@pytest.mark.slow
def test_keras_applications_counts(name):
    info = kerascnn.model_info(name)
    model = kerascnn.create_model(name, input_shape=info.default_input_shape)
    headless = keras.Model(model.inputs, model.get_layer(info.feature_info[-1]["name"]).output)
    assert (model.count_params(), headless.count_params()) == REFERENCE[name]


def test_headless_build_equals_cut_graph():
    """The cut used above is what include_top=False builds (checked on the cheapest model)."""
    assert kerascnn.create_model("mobilenet_v2", include_top=False).count_params() == REFERENCE["mobilenet_v2"][1]


@pytest.mark.parametrize("name,count", [("squeezenet1_0", 1_248_424), ("squeezenet1_1", 1_235_496)])
def test_squeezenet_torchvision_counts(name, count):
    """torchvision's counts (no BatchNorm in SqueezeNet, so Keras and PyTorch count alike)."""
    model = kerascnn.create_model(name)
    assert not model.non_trainable_weights
    assert model.count_params() == count


def test_squeezenet_pools_round_up_as_torchvision():
    """torchvision's MaxPool2d(3, 2, ceil_mode=True): n -> ceil((n - 3) / 2) + 1."""
    ceil_pool = lambda n: -(-(n - 3) // 2) + 1  # noqa: E731
    for name, stem, size in [("squeezenet1_0", 7, 224), ("squeezenet1_1", 3, 224), ("squeezenet1_0", 7, 231)]:
        model = kerascnn.create_model(name, input_shape=(size, size, 3), features_only=True)
        sizes = [(size - stem) // 2 + 1]
        for _ in range(3):
            sizes.append(ceil_pool(sizes[-1]))
        assert [out.shape[1] for out in model.outputs] == sizes, name


@pytest.mark.slow
def test_se_resnet50_timm_count():
    """timm's ``seresnet50``: 28,088,024 parameters (PyTorch does not count BatchNorm's running
    mean and variance, Keras does). Convert explicitly: Keras' count minus two per BN channel."""
    model = kerascnn.create_model("se_resnet50")
    bn_channels = sum(layer.gamma.shape[0] for layer in model.layers
                      if isinstance(layer, keras.layers.BatchNormalization))
    moving = sum(int(w.shape[0]) for w in model.non_trainable_weights)
    assert moving == 2 * bn_channels  # the only weights Keras counts that PyTorch does not
    assert model.count_params() - 2 * bn_channels == 28_088_024
    # the SE modules alone: fc1 (C -> C/16) and fc2 (C/16 -> C) with biases after every block
    se = sum(2 * c * (c // 16) + c // 16 + c for c, blocks in ((256, 3), (512, 4), (1024, 6), (2048, 3))
             for _ in range(blocks))
    resnet50 = kerascnn.create_model("resnet50")  # keras' ResNet50 keeps conv biases: remove them
    conv_biases = sum(layer.bias.shape[0] for layer in resnet50.layers
                      if isinstance(layer, keras.layers.Conv2D) and layer.use_bias)
    assert model.count_params() == resnet50.count_params() - conv_biases + se


def test_lenet5_paper_count():
    assert kerascnn.create_model("lenet5").count_params() == 61_706


@pytest.mark.parametrize("groups,count", [(2, 60_965_224), (1, 62_378_344)])
def test_alexnet_paper_counts(groups, count):
    model = kerascnn.create_model("alexnet", groups=groups)
    assert model.input_shape == (None, 227, 227, 3)
    assert model.count_params() == count


@pytest.mark.slow
def test_yolo_v1_paper_count():
    """Figure 3 of Redmon et al. 2016 read layer by layer (kernel, filters), written out flat
    here independently of the model's table: 24 convs with biases, FC 4096, FC 7x7x30."""
    convs = [(7, 64), (3, 192), (1, 128), (3, 256), (1, 256), (3, 512)]
    convs += [(1, 256), (3, 512)] * 4 + [(1, 512), (3, 1024)]
    convs += [(1, 512), (3, 1024)] * 2 + [(3, 1024)] * 4
    assert len(convs) == 24
    count, channels = 0, 3
    for kernel, filters in convs:
        count += kernel * kernel * channels * filters + filters
        channels = filters
    count += (7 * 7 * 1024 + 1) * 4096 + (4096 + 1) * 7 * 7 * 30
    model = kerascnn.create_model("yolo_v1")
    assert model.output_shape == (None, 7, 7, 30)
    assert model.count_params() == count == 271_703_550


@pytest.mark.slow
def test_inception_resnet_v1_facenet_count():
    """David Sandberg's TF-slim Inception-ResNet-v1 (davidsandberg/facenet,
    src/models/inception_resnet_v1.py, with the Bottleneck of its training scripts) read conv by conv
    and written out flat here, independently of the model's tables. Every conv has TF-slim's batch
    norm without scale: its variables beta, moving mean and moving variance (3 per channel, as Keras
    counts them), except each block's 1x1 up-projection (bias, no BN); the 1792 -> 512 bottleneck has no
    bias and a BN. 23,497,424 variables at inference (the Logits layer of training left out)."""
    bn_convs = [(9, 3, 32), (9, 32, 32), (9, 32, 64), (1, 64, 80), (9, 80, 192), (9, 192, 256)]
    bn_convs += [(1, 256, 32), (1, 256, 32), (9, 32, 32), (1, 256, 32), (9, 32, 32), (9, 32, 32)] * 5
    bn_convs += [(9, 256, 384), (1, 256, 192), (9, 192, 192), (9, 192, 256)]  # Mixed_6a
    bn_convs += [(1, 896, 128), (1, 896, 128), (7, 128, 128), (7, 128, 128)] * 10
    bn_convs += [(1, 896, 256), (9, 256, 384), (1, 896, 256), (9, 256, 256), (1, 896, 256), (9, 256, 256),
                 (9, 256, 256)]  # Mixed_7a
    bn_convs += [(1, 1792, 192), (1, 1792, 192), (3, 192, 192), (3, 192, 192)] * 6
    up = [(96, 256)] * 5 + [(256, 896)] * 10 + [(384, 1792)] * 6
    count = sum(k * c_in * c_out + 3 * c_out for k, c_in, c_out in bn_convs)
    count += sum(c_in * c_out + c_out for c_in, c_out in up) + 1792 * 512 + 3 * 512
    assert count == 23_497_424
    model = kerascnn.create_model("inception_resnet_v1", classes=10)
    embedding = keras.Model(model.inputs, model.get_layer("bottleneck_bn").output)
    assert embedding.count_params() == count
    assert model.count_params() == count + 513 * 10  # the classifier on the 512-d bottleneck
    # batch norm folded into the convs (FaceNet's frozen graph): a bias in place of 3 BN weights
    folded = kerascnn.create_model("inception_resnet_v1", classes=10, folded_bn=True)
    assert folded.count_params() == model.count_params() - 2 * sum(c for _, _, c in bn_convs)
