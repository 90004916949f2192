"""orthogonality_report / summarize_report against figures computed in NumPy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import bort_jax
from bort_jax import BortDimensionNumbers

FIGURES = ('relative_error', 'mean_abs_cosine', 'norm_spread')


def np_figures(kernel, amplitude=1.0):
  """The three figures of one kernel (output axis last), in float64."""
  m = np.asarray(kernel, np.float64).reshape(-1, np.shape(kernel)[-1])
  n, d = m.shape
  norms = np.linalg.norm(m, axis=0)
  a = np.mean(norms) ** 2 if amplitude == 'adaptive' else amplitude
  gram = (
      m.T @ m if d <= n else m @ m.T
  )  # the smaller side: the one that can reach aI
  small = min(n, d)
  cosines = np.abs((m / norms).T @ (m / norms))
  return {
      'relative_error': np.linalg.norm(gram - a * np.eye(small))
      / (a * math.sqrt(small)),
      'mean_abs_cosine': (cosines.sum() - np.trace(cosines))
      / max(d * (d - 1), 1),
      'norm_spread': np.std(norms) / np.mean(norms),
  }


def orthonormal(shape, seed=0):
  """A kernel whose ``reshape(-1, out)`` matrix has orthonormal columns (or rows if wide)."""
  out = shape[-1]
  fan_in = math.prod(shape[:-1])
  q, _ = np.linalg.qr(
      np.random.default_rng(seed).normal(
          size=(max(fan_in, out), min(fan_in, out))
      )
  )
  matrix = q if fan_in >= out else q.T
  return jnp.asarray(matrix.reshape(shape), jnp.float32)


def check_report(report, expected, rtol=1e-5, atol=1e-6):
  assert report.keys() == expected.keys()
  for path in expected:
    assert set(report[path]) == set(FIGURES), path
    for figure in FIGURES:
      value = report[path][figure]
      assert value.shape == () and value.dtype == jnp.float32, (
          path,
          figure,
          value,
      )
      np.testing.assert_allclose(
          float(value),
          expected[path][figure],
          rtol=rtol,
          atol=atol,
          err_msg=f'{path} {figure}',
      )


@pytest.mark.parametrize('amplitude', [1.0, 2.5])
@pytest.mark.parametrize('shape', [(8, 4), (3, 3, 2, 4), (5, 5)])
def test_orthonormal_kernel_scores_zero(shape, amplitude):
  kernel = math.sqrt(amplitude) * orthonormal(shape)
  report = bort_jax.orthogonality_report(
      {'layer': {'kernel': kernel}}, amplitude=amplitude
  )
  for figure in FIGURES:
    assert abs(float(report['layer/kernel'][figure])) < 1e-5, figure
  # The same kernel measured against the wrong amplitude is not orthonormal.
  wrong = bort_jax.orthogonality_report(
      {'layer': {'kernel': kernel}}, amplitude=amplitude + 1
  )
  assert float(wrong['layer/kernel']['relative_error']) > 0.2


def test_hand_computed_kernel():
  # Columns (1, 0, 0) and (1, 1, 0): norms 1 and √2, cosine 1/√2.
  # MᵀM − I = [[0, 1], [1, 1]]: Frobenius norm √3, relative to ‖I‖ = √2.
  kernel = jnp.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
  figures = bort_jax.orthogonality_report({'dense': {'kernel': kernel}})[
      'dense/kernel'
  ]
  np.testing.assert_allclose(
      float(figures['relative_error']), math.sqrt(3 / 2), rtol=1e-6
  )
  np.testing.assert_allclose(
      float(figures['mean_abs_cosine']), 1 / math.sqrt(2), rtol=1e-6
  )
  np.testing.assert_allclose(
      float(figures['norm_spread']), 3 - 2 * math.sqrt(2), rtol=1e-5
  )
  # Against a = 2: MᵀM − 2I = [[-1, 1], [1, 0]], norm √3, relative to ‖2I‖ = 2√2.
  doubled = bort_jax.orthogonality_report(
      {'dense': {'kernel': kernel}}, amplitude=2.0
  )
  np.testing.assert_allclose(
      float(doubled['dense/kernel']['relative_error']),
      math.sqrt(3) / (2 * math.sqrt(2)),
      rtol=1e-6,
  )


SHAPES = {
    'tall': (6, 4),
    'wide': (3, 7),
    'square': (5, 5),
    'conv': (3, 3, 2, 4),
    'wide_conv': (1, 1, 3, 8),
}


@pytest.mark.parametrize('amplitude', [1.0, 0.5, 'adaptive'])
@pytest.mark.parametrize('shape_name', sorted(SHAPES))
def test_matches_numpy(shape_name, amplitude):
  kernel = 0.5 * jax.random.normal(jax.random.key(0), SHAPES[shape_name])
  report = bort_jax.orthogonality_report(
      {'k': {'kernel': kernel}}, amplitude=amplitude
  )
  check_report(report, {'k/kernel': np_figures(kernel, amplitude)})


def test_wide_kernel_uses_the_smaller_gram():
  # Orthonormal rows: M Mᵀ = I although 7 columns in 3 dimensions cannot be orthogonal.
  kernel = orthonormal((3, 7))
  figures = bort_jax.orthogonality_report({'k': {'kernel': kernel}})['k/kernel']
  assert float(figures['relative_error']) < 1e-5
  assert float(figures['mean_abs_cosine']) > 0.1
  m = np.asarray(kernel, np.float64)
  assert (
      np.linalg.norm(m.T @ m - np.eye(7)) / math.sqrt(7) > 0.5
  )  # the larger Gram is far


@pytest.mark.parametrize('amplitude', [1.0, 0.3])
def test_relative_error_is_symmetric_under_transpose(amplitude):
  kernel = 0.5 * jax.random.normal(jax.random.key(1), (9, 4))
  report = bort_jax.orthogonality_report(
      {'tall': {'kernel': kernel}, 'wide': {'kernel': kernel.T}},
      amplitude=amplitude,
  )
  np.testing.assert_allclose(
      float(report['tall/kernel']['relative_error']),
      float(report['wide/kernel']['relative_error']),
      rtol=1e-5,
  )


def test_adaptive_amplitude_ignores_the_common_scale():
  kernel = 3.0 * orthonormal((8, 4))
  fixed = bort_jax.orthogonality_report({'k': {'kernel': kernel}})['k/kernel']
  adaptive = bort_jax.orthogonality_report(
      {'k': {'kernel': kernel}}, amplitude='adaptive'
  )['k/kernel']
  np.testing.assert_allclose(
      float(fixed['relative_error']), 8.0, rtol=1e-5
  )  # |9 − 1|
  assert float(adaptive['relative_error']) < 1e-5
  # Cosines and spread do not depend on the amplitude.
  for figure in ('mean_abs_cosine', 'norm_spread'):
    assert (
        float(fixed[figure]) == float(adaptive[figure])
        and float(fixed[figure]) < 1e-5
    )


def test_report_works_under_jit(dict_params):
  eager = bort_jax.orthogonality_report(dict_params, amplitude='adaptive')
  jitted = jax.jit(
      lambda p: bort_jax.orthogonality_report(p, amplitude='adaptive')
  )(dict_params)
  assert (
      jitted.keys()
      == eager.keys()
      == {'dense/kernel', 'conv/kernel', 'head/kernel'}
  )
  for path in eager:
    for figure in FIGURES:
      np.testing.assert_allclose(
          jitted[path][figure], eager[path][figure], rtol=1e-5
      )
  summary = jax.jit(
      lambda p: bort_jax.summarize_report(bort_jax.orthogonality_report(p))
  )(dict_params)
  assert all(np.isfinite(v) for v in summary.values())


def test_low_precision_kernels_are_measured_in_float32():
  kernel = (0.5 * jax.random.normal(jax.random.key(2), (6, 4))).astype(
      jnp.bfloat16
  )
  report = bort_jax.orthogonality_report({'k': {'kernel': kernel}})
  check_report(report, {'k/kernel': np_figures(np.asarray(kernel, np.float32))})


def test_stacked_kernels_average_their_matrices():
  stacked = (
      0.5
      * jax.random.normal(jax.random.key(3), (3, 6, 4))
      * jnp.array([0.5, 1.0, 2.0])[:, None, None]
  )
  report = bort_jax.orthogonality_report(
      {'blocks': {'kernel': stacked}},
      dimension_numbers=BortDimensionNumbers(output_axis=-1, batch_axis=0),
  )
  per_layer = [np_figures(layer) for layer in stacked]
  expected = {f: np.mean([layer[f] for layer in per_layer]) for f in FIGURES}
  check_report(report, {'blocks/kernel': expected})


def test_attention_kernels_are_read_with_their_output_axes(attention_net):
  report = bort_jax.orthogonality_report(nnx.state(attention_net, nnx.Param))
  params = nnx.as_pure(nnx.state(attention_net, nnx.Param))
  for name in ('query', 'key', 'value'):
    kernel = params['attention'][name]['kernel']  # (in, heads, head_dim)
    expected = np_figures(np.asarray(kernel).reshape(kernel.shape[0], -1))
    for figure in FIGURES:
      np.testing.assert_allclose(
          float(report[f'attention/{name}/kernel'][figure]),
          expected[figure],
          rtol=1e-5,
          atol=1e-6,
      )


def test_summarize_report_means_and_maxes():
  kernels = {
      f'layer{i}': {
          'kernel': 0.3 * (i + 1) * jax.random.normal(jax.random.key(i), (6, 4))
      }
      for i in range(3)
  }
  summary = bort_jax.summarize_report(bort_jax.orthogonality_report(kernels))
  per_kernel = [np_figures(kernels[name]['kernel']) for name in sorted(kernels)]
  assert set(summary) == {f'{f}/{s}' for f in FIGURES for s in ('mean', 'max')}
  for figure in FIGURES:
    values = [k[figure] for k in per_kernel]
    assert (
        np.ptp(values) > 1e-3 or figure != 'relative_error'
    )  # mean != max here
    np.testing.assert_allclose(
        float(summary[f'{figure}/mean']), np.mean(values), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(summary[f'{figure}/max']), np.max(values), rtol=1e-5
    )


def test_summarize_empty_report_is_nan():
  summary = bort_jax.summarize_report(
      bort_jax.orthogonality_report({'bias': jnp.ones(3)})
  )
  assert len(summary) == 2 * len(FIGURES)
  assert all(np.isnan(float(v)) for v in summary.values())


def test_paths_are_slash_separated_names(nnx_net, linen_params):
  nested = {
      'encoder': {
          'blocks': [{'kernel': jnp.ones((4, 3))}, {'kernel': jnp.ones((4, 3))}]
      },
      'dense': {'kernel': jnp.ones((4, 3)), 'bias': jnp.ones(3)},
  }
  assert set(bort_jax.orthogonality_report(nested)) == {
      'encoder/blocks/0/kernel',
      'encoder/blocks/1/kernel',
      'dense/kernel',
  }
  # nnx.State with Variable leaves: no trailing '.value' / 'value'.
  assert set(bort_jax.orthogonality_report(nnx.state(nnx_net, nnx.Param))) == {
      'conv/kernel',
      'linear/kernel',
  }
  assert set(bort_jax.orthogonality_report(nnx.state(nnx_net))) == {
      'conv/kernel',
      'linear/kernel',
  }
  assert set(bort_jax.orthogonality_report(linen_params)) == {
      'Conv_0/kernel',
      'Dense_0/kernel',
  }
