"""Data parallelism: a device mesh for ``jax.jit``, and helpers for ``jax.pmap``.

Under ``jax.jit`` the batch is one global array sharded over the mesh axis
``data`` and the train state is replicated, or sharded FSDP-style (each large
array split along its largest axis divisible by the number of devices). The
compiler inserts the collectives. Each process contributes its own rows of a
global batch (:func:`global_batch`), so the same code runs on one device, on
many local devices and on many hosts (after ``jax.distributed.initialize``).

Under ``jax.pmap`` every local device holds a replica of the state
(:func:`replicate`, :func:`unreplicate`) and the batch gets a leading device
axis (:func:`split_for_pmap`).

Example:
  >>> import jax, jax.numpy as jnp, numpy as np
  >>> from bort_jax.training.parallel import create_mesh, global_batch
  >>> from bort_jax.training.parallel import state_sharding
  >>> mesh = create_mesh()
  >>> state = {'w': jnp.ones((4, 2))}
  >>> state = jax.device_put(state, state_sharding(state, mesh))
  >>> batch = global_batch({'image': np.ones((8, 3), np.float32)}, mesh)
  >>> batch['image'].shape
  (8, 3)
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = 'data'
PMAP_AXIS = 'batch'

PyTree = Any


def is_prng_key(x) -> bool:
  """Whether ``x`` (an array or shape struct) holds typed PRNG keys."""
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def create_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that keeps a full copy on every device of ``mesh``."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over ``data``."""
  return NamedSharding(mesh, P(DATA_AXIS))


def fsdp_spec(shape: tuple[int, ...], num_shards: int, min_size: int) -> P:
  """The partition spec of one array under FSDP.

  The largest axis divisible by ``num_shards`` is split over ``data`` (ties:
  the last such axis); arrays with fewer than ``min_size`` elements, or with no
  divisible axis, are replicated.

  Example:
    >>> from jax.sharding import PartitionSpec as P
    >>> from bort_jax.training.parallel import fsdp_spec
    >>> fsdp_spec((3, 3, 64, 128), 8, min_size=0) == P(None, None, None, 'data')
    True
    >>> fsdp_spec((10,), 8, min_size=0) == P()
    True
  """
  if num_shards <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  candidates = [
      (size, axis) for axis, size in enumerate(shape) if size % num_shards == 0
  ]
  if not candidates:
    return P()
  _, axis = max(candidates)
  return P(*[DATA_AXIS if a == axis else None for a in range(len(shape))])


def state_sharding(
    state: PyTree, mesh: Mesh, *, fsdp: bool = False, min_size: int = 2**18
) -> PyTree:
  """Shardings for every array of ``state``: replicated, or FSDP.

  The rule depends on an array's shape only, so optimizer moments get the
  sharding of the parameters they belong to.

  Args:
    state: a pytree of arrays (or shape/dtype structs).
    mesh: from :func:`create_mesh`.
    fsdp: shard large arrays (see :func:`fsdp_spec`); else replicate all.
    min_size: arrays with fewer elements stay replicated under FSDP.

  Returns:
    A pytree of ``NamedSharding`` with the structure of ``state``.
  """
  if not fsdp:
    return jax.tree.map(lambda _: replicated(mesh), state)
  num_shards = mesh.shape[DATA_AXIS]
  return jax.tree.map(
      lambda x: NamedSharding(mesh, fsdp_spec(x.shape, num_shards, min_size)),
      state,
  )


def global_batch(
    local_batch: dict[str, np.ndarray], mesh: Mesh
) -> dict[str, jax.Array]:
  """Global arrays, sharded over ``data``, from this process' rows of a batch.

  Args:
    local_batch: this process' ``batch_size // process_count`` rows (as the
      data package's iterators yield them).
    mesh: from :func:`create_mesh`.

  Returns:
    The batch as global ``jax.Array`` of ``batch_size`` rows.
  """
  sharding = batch_sharding(mesh)
  return {
      key: jax.make_array_from_process_local_data(sharding, value)
      for key, value in local_batch.items()
  }


def replicate(
    tree: PyTree,
    devices: list[jax.Device] | None = None,
    *,
    axis_name: str = PMAP_AXIS,
) -> PyTree:
  """A copy of ``tree`` on each local device, stacked on a new leading axis (for pmap).

  Args:
    tree: arrays (and PRNG keys) to copy.
    devices: default: the local devices.
    axis_name: the pmap's axis name; the copies are laid out as that pmap's
      outputs are, so its first call compiles the same program as the next.
  """
  devices = jax.local_devices() if devices is None else devices
  sharding = NamedSharding(
      Mesh(np.asarray(devices), (axis_name,)), P(axis_name)
  )

  def put(x):
    if is_prng_key(x):
      return jax.random.wrap_key_data(
          put(jax.random.key_data(x)), impl=jax.random.key_impl(x)
      )
    host = np.asarray(jax.device_get(x))
    return jax.device_put(
        np.broadcast_to(host, (len(devices),) + host.shape), sharding
    )

  return jax.tree.map(put, tree)


def unreplicate(tree: PyTree) -> PyTree:
  """The first replica of a :func:`replicate`-d (or pmapped) tree."""
  return jax.tree.map(lambda x: x[0], tree)


def split_for_pmap(
    batch: dict[str, np.ndarray], num_devices: int | None = None
) -> dict:
  """Reshapes ``[B, ...]`` to ``[num_devices, B / num_devices, ...]``."""
  num_devices = jax.local_device_count() if num_devices is None else num_devices

  def split(x):
    if x.shape[0] % num_devices:
      raise ValueError(
          f'batch of {x.shape[0]} does not split over {num_devices} local devices'
      )
    return x.reshape((num_devices, x.shape[0] // num_devices) + x.shape[1:])

  return jax.tree.map(split, batch)


def put_state(tree: PyTree, shardings: PyTree) -> PyTree:
  """Places host-identical arrays (same values on every process) as global arrays.

  Works in multi-process runs, where ``jax.device_put`` of a local array to a
  sharding spanning other processes' devices is not allowed: each process
  fills its own shards from its copy.
  """

  def put(x, sharding):
    if is_prng_key(x):
      return jax.random.wrap_key_data(
          put(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x)
      )
    host = np.asarray(jax.device_get(x))
    return jax.make_array_from_callback(
        host.shape, sharding, lambda index: host[index]
    )

  return jax.tree.map(put, tree, shardings)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
  """``jax.distributed.initialize``, with CPU collectives (gloo) enabled.

  Call before any other JAX call. Without arguments JAX detects the cluster
  (Cloud TPU, SLURM, ...). On CPU, cross-process collectives need
  ``jax_cpu_collectives_implementation='gloo'``, set here.

  Example:
    >>> initialize_distributed('127.0.0.1:12345', 2, 0)  # doctest: +SKIP
  """
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
  )
