"""The model zoo: one module per family, each a table of stages and a few builders.

Use :func:`kerascnn.create_model` / :func:`kerascnn.list_models`, or import a builder from its
family module (``from kerascnn.models.resnet import resnet50``).
"""

from kerascnn.models.registry import (  # noqa: F401
    ModelInfo,
    create_model,
    list_models,
    model_info,
    register_model,
)
