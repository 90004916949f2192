"""One process of a two-process ``jax.distributed`` training run on localhost.

Run by ``test_distributed.py`` twice, with process ids 0 and 1::

  python distributed_worker.py PORT PROCESS_ID WORKDIR DATA_DIR OUT_DIR [PARAM_SHARDING]

Each process joins the coordinator at ``127.0.0.1:PORT`` (CPU collectives
over gloo), trains the tiny MNIST config below with its own half of every
batch, and writes ``OUT_DIR/params_<PROCESS_ID>.npz`` (its own copy of the
final parameters, gathered if sharded) and ``OUT_DIR/checksum_<PROCESS_ID>.txt``
(sha256 of those bytes).
"""

import hashlib
import os
import sys

import numpy as np

from bort_jax import configs
from bort_jax.training import parallel

NUM_PROCESSES = 2


def worker_config(param_sharding: str = 'replicated'):
  """The run every process (and the single-process reference) trains."""
  return configs.replace(
      configs.get_config('mnist_mlp'),
      model_kwargs={'hidden_features': [32]},
      optimizer='bort_adamw',
      learning_rate=1e-3,
      gamma=1.0,
      amplitude='adaptive',
      epochs=1,
      batch_size=64,
      eval_batch_size=100,
      train_examples=384,
      eval_examples=250,
      param_sharding=param_sharding,
      fsdp_min_size=0,
  )


def local_copy(params) -> dict[str, np.ndarray]:
  """This process' own copy of every parameter (gathered from all processes if sharded)."""
  import jax  # pylint: disable=import-outside-toplevel
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

  flat = {
      jax.tree_util.keystr(path): leaf
      for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
  }
  copies = {}
  for name, leaf in flat.items():
    if leaf.sharding.is_fully_replicated:
      copies[name] = np.asarray(leaf.addressable_shards[0].data)
    else:
      copies[name] = np.asarray(
          multihost_utils.process_allgather(leaf, tiled=True)
      )
  return copies


def main(argv):
  port, process_id, workdir, data_dir, out_dir = argv[:5]
  param_sharding = argv[5] if len(argv) > 5 else 'replicated'
  process_id = int(process_id)
  parallel.initialize_distributed(
      f'127.0.0.1:{port}', NUM_PROCESSES, process_id
  )
  import jax  # pylint: disable=import-outside-toplevel
  from bort_jax.training import loop  # pylint: disable=import-outside-toplevel

  assert (
      jax.process_count() == NUM_PROCESSES
      and jax.device_count() == NUM_PROCESSES
  )
  result = loop.train_and_evaluate(
      worker_config(param_sharding), workdir, data_dir=data_dir, progress=False
  )
  copies = local_copy(result.state.params)
  digest = hashlib.sha256()
  for name in sorted(copies):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(copies[name]).tobytes())
  np.savez(os.path.join(out_dir, f'params_{process_id}.npz'), **copies)
  with open(os.path.join(out_dir, f'checksum_{process_id}.txt'), 'w') as f:
    f.write(digest.hexdigest() + '\n')
  jax.distributed.shutdown()


if __name__ == '__main__':
  main(sys.argv[1:])
