"""The Keras internals kerascnn relies on (kerascnn/_keras_compat.py) still behave as it expects."""

from __future__ import annotations

import keras
import numpy as np

from kerascnn._keras_compat import call_count, is_graph_model, run_through_graph


def _model():
    x = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    y = keras.layers.Add(name="add")([shared(x), shared(keras.layers.ReLU(name="relu")(x))])
    return keras.Model(x, y), shared


def test_graph_models_are_recognised():
    model, shared = _model()
    assert is_graph_model(model)
    assert is_graph_model(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    assert not is_graph_model(shared)


def test_run_through_graph_visits_every_call_in_order_and_computes_the_outputs():
    model, _ = _model()
    seen = []

    def call(layer, *args, **kwargs):
        seen.append(layer.name)
        return layer(*args, **kwargs)

    x = np.arange(8, dtype="float32").reshape(2, 4)
    out = run_through_graph(model, keras.ops.convert_to_tensor(x), call)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), model.predict(x, verbose=0), rtol=1e-6)
    assert seen.index("relu") < seen.index("add") and seen.count("shared") == 2


def test_call_count_counts_shared_calls():
    model, shared = _model()
    assert call_count(shared) == 2
    assert call_count(model.get_layer("relu")) == 1


def test_layer_table_walks_a_sequential_model():
    from kerascnn.inspect import layer_table

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten()])
    table = layer_table(model)
    assert [row.name for row in table.rows][-2:] == ["conv", "flatten"]
    assert table.total_params == model.count_params() == 3 * 3 * 3 * 4 + 4
