"""kerascnn.adversarial and training.AdversarialModel: FGSM against an analytic gradient, PGD's
projection, accuracy under attack of a digits classifier trained here, adversarial training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kerascnn import adversarial, training
from kerascnn.errors import EpsilonError

EPSILONS = (0.0, 0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's 8x8 digits (bundled, no download), in [0, 1]: 1400 to train, 397 to test."""
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order].astype(np.int32)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def _classifier():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(h))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))


@pytest.fixture(scope="module")
def plain_model(digits):
    x, y, _, _ = digits
    model = training.compile_model(_classifier(), 3e-3, jit_compile=False)
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    return model


def test_fgsm_equals_the_analytic_step_of_softmax_regression():
    # softmax regression: d CE / d x = W (p - onehot(y)), so FGSM is known in closed form
    rng = np.random.default_rng(0)
    inputs = keras.Input((2, 2, 1))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    w, b = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    model.set_weights([w, b])
    x = rng.uniform(0.2, 0.8, (6, 2, 2, 1)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    logits = x.reshape(6, 4) @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gradient = (p - np.eye(3)[y]) @ w.T
    expected = np.clip(x.reshape(6, 4) + 0.1 * np.sign(gradient), 0, 1).reshape(x.shape)
    np.testing.assert_allclose(adversarial.fgsm(model, x, y, 0.1), expected, atol=1e-6)
    # an epsilon of 0 changes nothing; the value range clips
    np.testing.assert_array_equal(adversarial.fgsm(model, x, y, 0.0), x)
    assert adversarial.fgsm(model, x, y, 0.5).max() <= 1.0 and adversarial.fgsm(model, x, y, 0.5).min() >= 0.0


@pytest.mark.slow
def test_accuracy_under_attack_falls_with_epsilon(plain_model, digits):
    _, _, x_test, y_test = digits
    report = adversarial.robust_accuracy(plain_model, x_test, y_test, EPSILONS)
    pgd = adversarial.robust_accuracy(plain_model, x_test, y_test, [0.1], attack="pgd", steps=5, seed=0)[0.1]
    print(f"\ndigits CNN: accuracy by FGSM epsilon {report}; PGD-5 at 0.1: {pgd:.3f}")
    assert report[0.0] > 0.93
    accuracies = [report[e] for e in EPSILONS]
    assert all(a > b for a, b in zip(accuracies, accuracies[1:])), accuracies
    assert report[0.2] < report[0.0] - 0.5
    assert pgd <= report[0.1] + 0.01  # the iterative attack is at least as strong


def test_pgd_projects_onto_the_ball_and_the_range(plain_model, digits):
    _, _, x_test, y_test = digits
    x, y = x_test[:64], y_test[:64]
    for random_start in (True, False):  # PGD and iterative FGSM
        x_adv = adversarial.pgd(plain_model, x, y, 0.1, steps=4, step_size=0.06, random_start=random_start, seed=1)
        assert np.abs(x_adv - x).max() <= 0.1 + 1e-6
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        assert np.abs(x_adv - x).max() > 0.09  # it used the budget
    loss = keras.losses.SparseCategoricalCrossentropy()
    fgsm_loss = float(loss(y, plain_model(adversarial.fgsm(plain_model, x, y, 0.1))))
    pgd_loss = float(loss(y, plain_model(adversarial.pgd(plain_model, x, y, 0.1, steps=5, seed=0))))
    assert pgd_loss > fgsm_loss > float(loss(y, plain_model(x)))


@pytest.mark.slow
def test_adversarial_training_improves_robust_accuracy(plain_model, digits, tmp_path):
    x, y, x_test, y_test = digits
    robust = training.AdversarialModel(_classifier(), epsilon=0.1)
    training.compile_model(robust, 3e-3, jit_compile=False)
    robust.fit(x, y, epochs=15, batch_size=64, verbose=0)
    before = adversarial.robust_accuracy(plain_model, x_test, y_test, [0.0, 0.1])
    after = adversarial.robust_accuracy(robust.model, x_test, y_test, [0.0, 0.1])
    print(f"\nFGSM 0.1 accuracy: plain {before}, adversarially trained {after}")
    assert after[0.1] > before[0.1] + 0.1
    assert after[0.0] > 0.93  # clean accuracy kept
    robust.save(tmp_path / "robust.keras")
    loaded = keras.saving.load_model(tmp_path / "robust.keras", safe_mode=True)
    assert isinstance(loaded, training.AdversarialModel) and loaded.epsilon == 0.1
    np.testing.assert_allclose(loaded.predict(x_test[:8], verbose=0), robust.predict(x_test[:8], verbose=0), atol=1e-6)


@pytest.mark.parametrize("epsilon, message", [
    (-0.1, r"epsilon must lie in \[0, 1\].*got -0.1"),
    (1.5, r"epsilon must lie in \[0, 1\].*value range \(0.0, 1.0\).*got 1.5"),
    (float("nan"), "got nan"),
])
def test_epsilon_outside_the_image_range_is_refused(epsilon, message):
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    x, y = np.zeros((1, 2, 2, 1), np.float32), np.zeros(1, int)
    with pytest.raises(EpsilonError, match=message):
        adversarial.fgsm(model, x, y, epsilon)
    with pytest.raises(EpsilonError, match=message):
        training.AdversarialModel(model, epsilon)
    with pytest.raises(EpsilonError, match="255"):  # a 0-255 image takes larger budgets, not larger than 255
        adversarial.pgd(model, x, y, 300, value_range=(0, 255))
    with pytest.raises(EpsilonError, match="step_size"):
        adversarial.pgd(model, x, y, 0.1, step_size=-1)
    with pytest.raises(EpsilonError, match="low < high"):
        adversarial.fgsm(model, x, y, 0.1, value_range=(1, 0))


@pytest.mark.parametrize("activation, from_logits", [("softmax", False), (None, True)])
def test_wrapper_compiles_with_the_wrapped_models_loss(activation, from_logits):
    inner = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3, activation=activation)])
    robust = training.compile_model(training.AdversarialModel(inner, 0.1), jit_compile=False)
    assert robust.loss.get_config()["from_logits"] is from_logits
