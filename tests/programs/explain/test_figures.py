"""Every figure function writes a PNG."""

import numpy as np
import pytest

from bort_jax.programs.explain import figures

RNG = np.random.default_rng(0)
IMAGES = RNG.random((3, 6, 6, 1)).astype(np.float32)


@pytest.mark.parametrize(
    'name,draw',
    [
        (
            'rows',
            lambda p: figures.image_rows_figure(
                [('a', IMAGES), ('b', IMAGES[:2] - 0.5)],
                p,
                symmetric=True,
                column_titles=['x', 'y', 'z'],
            ),
        ),
        (
            'reconstruction',
            lambda p: figures.reconstruction_figure(
                IMAGES, {'conv1': IMAGES}, p, title='t'
            ),
        ),
        (
            'saliency',
            lambda p: figures.saliency_figure(
                IMAGES, {'sat': IMAGES[..., 0]}, p
            ),
        ),
        (
            'adversarial',
            lambda p: figures.adversarial_figure(
                IMAGES,
                {
                    'ours': {
                        'adversarial': IMAGES,
                        'perturbation': IMAGES - 0.5,
                        'prediction': np.array([1, 2, 3]),
                    }
                },
                np.array([0, 1, 2]),
                np.array([1, 2, 3]),
                p,
            ),
        ),
        (
            'gram',
            lambda p: figures.gram_figure(
                {'baseline': {'fc': np.eye(4)}, 'bort': {'fc': 2 * np.eye(4)}},
                p,
            ),
        ),
        (
            'curves',
            lambda p: figures.curves_figure(
                {'bort sat': np.linspace(1, 0, 5)}, p
            ),
        ),
    ],
)
def test_figures_write_png(tmp_path, name, draw):
  path = tmp_path / 'sub' / f'{name}.png'
  assert draw(path) == str(path)
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
