"""The configs, optimizers and pure steps import without tfds or orbax."""

import subprocess
import sys
import textwrap

import pytest

_BLOCKED = ('tensorflow_datasets', 'orbax', 'tensorflow')


def _run_without_io_libraries(body: str) -> subprocess.CompletedProcess:
  script = textwrap.dedent(f"""
      import importlib.abc, sys

      class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
          if name.split('.')[0] in {_BLOCKED!r}:
            raise ImportError(f'{{name}} is blocked')

      sys.meta_path.insert(0, Blocker())
  """) + textwrap.dedent(body)
  return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        timeout=300)


def test_steps_and_optimizers_need_no_io_libraries():
  result = _run_without_io_libraries("""
      from bort_jax import training
      tx = training.create_optimizer('bort_adamw', learning_rate=1e-3, gamma=0.1)
      assert callable(training.make_train_step)
      assert training.get_config('mnist_cnn').optimizer == 'bort_adamw'
      assert 'train_and_evaluate' in dir(training)
      print('imported')
  """)
  assert result.returncode == 0, result.stderr
  assert 'imported' in result.stdout


def test_loop_import_names_the_missing_library():
  result = _run_without_io_libraries("""
      from bort_jax.training import train_and_evaluate
  """)
  assert result.returncode != 0
  assert 'is blocked' in result.stderr


def test_unknown_attribute_raises_attribute_error():
  from bort_jax import training
  with pytest.raises(AttributeError, match='no_such_thing'):
    training.no_such_thing
