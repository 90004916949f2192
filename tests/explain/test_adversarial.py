"""FGSM, PGD and our explainable adversarial samples."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from bort_jax import explain
from bort_jax.models import MLP, InvertibleCNN
from bort_jax.models.layers import Flatten, LeakyReLU, NamedSequential

from testing import conv, linear, mlp, normal, set_orthogonal, uniform


def _mlp(num_classes, seed=0):
  return mlp((10, 32, num_classes), seed)


def _norms(delta):
  flat = delta.reshape(delta.shape[0], -1)
  return jnp.max(jnp.abs(flat), axis=-1), jnp.linalg.norm(flat, axis=-1)


@pytest.mark.parametrize(
    'num_classes,norm,targeted',
    [(2, 'linf', False), (7, 'linf', True), (2, 'l2', True), (7, 'l2', False)],
)
def test_fgsm_and_pgd_stay_in_the_ball_and_the_valid_range(
    num_classes, norm, targeted
):
  model = _mlp(num_classes)
  x = uniform(0, (6, 10))
  labels = jnp.arange(6) % num_classes
  eps = 0.1 if norm == 'linf' else 0.5
  kwargs = dict(norm=norm, targeted=targeted, clip_min=0.0, clip_max=1.0)
  for x_adv in (
      explain.fgsm(model, x, labels, eps, **kwargs),
      explain.pgd(
          model, x, labels, eps, jax.random.key(1), num_steps=5, **kwargs
      ),
  ):
    linf, l2 = _norms(x_adv - x)
    assert float((linf if norm == 'linf' else l2).max()) <= eps + 1e-5
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


def test_fgsm_steps_by_eps_along_the_gradient_sign():
  model = linear(4, 3)
  x = jnp.zeros((2, 4))
  labels = jnp.array([0, 2])
  x_adv = explain.fgsm(model, x, labels, 0.25)
  grads = jax.grad(
      lambda v: optax.softmax_cross_entropy_with_integer_labels(
          model(v), labels
      ).sum()
  )(x)
  np.testing.assert_allclose(x_adv, 0.25 * jnp.sign(grads), rtol=1e-6)


def _loss(model, x, labels):
  return optax.softmax_cross_entropy_with_integer_labels(model(x), labels)


@pytest.mark.parametrize('norm,eps', [('linf', 0.3), ('l2', 1.0)])
def test_pgd_beats_fgsm(norm, eps):
  model = mlp((10, 64, 64, 5), seed=5)
  x = normal(2, (32, 10))
  labels = jnp.argmax(model(x), -1)  # Attack the model's own predictions.
  pgd = jax.jit(explain.pgd, static_argnames=('num_steps', 'norm'))
  x_pgd = pgd(model, x, labels, eps, jax.random.key(3), num_steps=20, norm=norm)
  x_fgsm = explain.fgsm(model, x, labels, eps, norm=norm)
  loss_pgd, loss_fgsm = _loss(model, x_pgd, labels), _loss(
      model, x_fgsm, labels
  )
  assert float(loss_pgd.mean()) > float(loss_fgsm.mean())


def test_targeted_pgd_reaches_targets_and_keys_matter():
  model = _mlp(4)
  x = normal(4, (8, 10))
  targets = (jnp.argmax(model(x), -1) + 1) % 4

  def attack(seed):
    return explain.pgd(
        model,
        x,
        targets,
        3.0,
        jax.random.key(seed),
        num_steps=50,
        norm='l2',
        targeted=True,
    )

  x_adv = attack(0)
  assert (
      float(explain.attack_success(model(x_adv), None, targets).mean()) == 1.0
  )
  same = attack(0)
  other = attack(1)
  np.testing.assert_array_equal(x_adv, same)
  assert float(jnp.abs(x_adv - other).max()) > 0


def _bijective_model():
  """4x4x1 -> conv 2x2/2 (4 ch, square orthogonal) -> LeakyReLU -> flatten ->
  classifier: every representation before the classifier is reachable."""
  down = conv(1, 4, (2, 2), strides=2, padding=((0, 0), (0, 0)))
  set_orthogonal(down, 0)
  return NamedSequential(
      [
          ('down', down),
          ('lrelu', LeakyReLU(0.5)),
          ('flatten', Flatten()),
          ('classifier', linear(16, 5)),
      ]
  )


def test_ours_on_a_bijective_model_moves_exactly_and_reaches_the_targets():
  """g is the exact inverse and every representation is reachable, so one
  step at scale 1 gives exactly the requested margin over the old rival
  (another class may overtake; further steps handle it)."""
  model = _bijective_model()
  x = normal(1, (6, 4, 4, 1))
  logits = model(x)
  targets = (jnp.argmax(logits, -1) + 2) % 5
  x_adv = explain.explainable_adversarial(
      model, x, targets, num_steps=1, margin=1.0, num_scales=1
  )
  new_logits = model(x_adv)
  rival = jnp.argmax(
      jnp.where(jax.nn.one_hot(targets, 5, dtype=bool), -jnp.inf, logits), -1
  )
  gap = jnp.take_along_axis(
      new_logits, targets[:, None], 1
  ) - jnp.take_along_axis(new_logits, rival[:, None], 1)
  np.testing.assert_allclose(gap[:, 0], 1.0, atol=1e-4)
  x_adv = explain.explainable_adversarial(model, x, targets, num_steps=4)
  assert (
      float(explain.attack_success(model(x_adv), None, targets).mean()) == 1.0
  )


def test_ours_example_mode_moves_to_the_target_example(lossless_cnn, images):
  target_examples = images[::-1]
  x_adv = explain.explainable_adversarial(
      lossless_cnn,
      images,
      jnp.zeros(3, jnp.int32),
      mode='example',
      target_examples=target_examples,
      step_fraction=1.0,
      num_steps=1,
  )
  np.testing.assert_allclose(x_adv, target_examples, atol=1e-4)


def test_ours_jits_and_respects_the_range(lossless_cnn, images):
  x = jax.nn.sigmoid(images)
  targets = jnp.array([1, 2, 3])
  ours = jax.jit(
      explain.explainable_adversarial,
      static_argnames=('num_steps', 'clip_min', 'clip_max', 'num_scales'),
  )
  x_adv = ours(
      lossless_cnn,
      x,
      targets,
      num_steps=2,
      num_scales=4,
      clip_min=0.0,
      clip_max=1.0,
  )
  assert x_adv.shape == x.shape
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
  assert float(jnp.abs(x_adv - x).max()) > 0


def test_classifier_input_layer():
  cnn = nnx.eval_shape(lambda: InvertibleCNN(channels=(2, 2), rngs=nnx.Rngs(0)))
  assert explain.classifier_input_layer(cnn) == 'down2_lrelu'
  assert explain.classifier_input_layer(
      nnx.eval_shape(lambda: MLP(rngs=nnx.Rngs(0)))
  ) == ('fc1_relu')


def test_attack_errors(lossless_cnn, images):
  model = _mlp(3)
  x = jnp.zeros((2, 10))
  with pytest.raises(ValueError, match="unknown norm 'l1'"):
    explain.fgsm(model, x, jnp.array([0, 1]), 0.1, norm='l1')
  with pytest.raises(
      ValueError, match=r'labels must have shape \[N\] = \(2,\)'
  ):
    explain.pgd(model, x, jnp.array([0, 1, 2]), 0.1, jax.random.key(0))
  with pytest.raises(ValueError, match='num_steps must be positive'):
    explain.pgd(
        model, x, jnp.array([0, 1]), 0.1, jax.random.key(0), num_steps=0
    )
  targets = jnp.zeros(3, jnp.int32)
  for options, message in [
      (dict(mode='gradient'), "unknown mode 'gradient'"),
      (dict(mode='example'), 'needs target_examples'),
      (
          dict(mode='example', target_examples=images[:1]),
          "target_examples must have the inputs' shape",
      ),
      (dict(layer_name='conv1'), "moves the classifier's input"),
      (dict(layer_name='conv7'), "unknown layer 'conv7'"),
  ]:
    with pytest.raises(ValueError, match=message):
      explain.explainable_adversarial(lossless_cnn, images, targets, **options)
  with pytest.raises(ValueError, match=r'targets must have shape \[N\]'):
    explain.explainable_adversarial(lossless_cnn, images, targets[:2])
