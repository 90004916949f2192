r"""A function of one array as a graph of primitives, ready to run backwards.

:func:`trace_graph` traces ``f`` with :func:`jax.make_jaxpr` and flattens its
jaxpr into :class:`Node`\ s: calls (``jit``, ``custom_jvp_call``,
``custom_vjp_call``, ``remat``...) are inlined, except those marked by
:func:`~bort_jax.explain.interpreter.custom_inverse`, which stay one node.
Every variable is an ``int``. A variable *depends* on the input when some
path of nodes leads from the input to it; the others are constants (the
parameters closed over by ``f`` and whatever is computed from them alone),
evaluated once, here, so that the backward pass reads them as values. Nodes
that do not lead to the output are dropped.

The graph also knows each variable's *immediate dominator*: the last
variable that every path from the input to it passes through. A node with
two operands that depend on the input (a residual addition, LeakyReLU's
``select_n``, attention) is a *join*; the sub-graph between its dominator
and its output is a *block*, the unit that
:mod:`~bort_jax.explain.interpreter` inverts as a whole.

Example:
  >>> import jax.numpy as jnp
  >>> from bort_jax.explain.graph import trace_graph
  >>> graph = trace_graph(lambda x: 2.0 * x + 1.0, jnp.zeros((1, 3)))
  >>> [node.primitive for node in graph.nodes]
  ['mul', 'add']
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
from jax.extend import core as jex

__all__ = [
    'CALL_PRIMITIVES',
    'Graph',
    'Node',
    'source_summary',
    'trace_graph',
]

#: Call-like primitives whose inner jaxpr is inlined.
CALL_PRIMITIVES = frozenset(
    {
        'pjit',
        'jit',
        'closed_call',
        'core_call',
        'custom_jvp_call',
        'custom_vjp_call',
        'custom_vjp_call_jaxpr',
        'remat',
        'checkpoint',
        'remat2',
    }
)
_INNER_JAXPR_PARAMS = ('jaxpr', 'call_jaxpr', 'fun_jaxpr')


@dataclasses.dataclass(frozen=True, eq=False)
class Node:
  """One primitive application, with variables numbered by ``int``.

  Attributes:
    primitive: the primitive's name, e.g. ``'conv_general_dilated'``.
    bind: applies the primitive with its parameters to operand values.
    params: the primitive's parameters.
    inputs: the operand variables.
    outputs: the result variables.
    in_avals: the operands' shapes and dtypes (``jax.ShapeDtypeStruct``).
    out_avals: the results' shapes and dtypes.
    source_info: where in the user's code the primitive was applied: its
      own source information, then that of the calls it was inlined from.
  """

  primitive: str
  bind: Callable[..., Any]
  params: dict[str, Any]
  inputs: tuple[int, ...]
  outputs: tuple[int, ...]
  in_avals: tuple[jax.ShapeDtypeStruct, ...]
  out_avals: tuple[jax.ShapeDtypeStruct, ...]
  source_info: tuple[Any, ...] = ()


@dataclasses.dataclass
class Graph:
  """The input-dependent part of a traced function, with its constants.

  Attributes:
    input: the input variable.
    output: the output variable.
    nodes: the nodes on a path from the input to the output, in order.
    values: the value of every constant variable.
    avals: the shape and dtype of every variable.
    idom: the immediate dominator of every dependent variable but the input.
  """

  input: int
  output: int
  nodes: list[Node]
  values: dict[int, Any]
  avals: dict[int, jax.ShapeDtypeStruct]
  idom: dict[int, int]

  @functools.cached_property
  def producers(self) -> dict[int, Node]:
    """The node that produces each dependent variable."""
    return {v: node for node in self.nodes for v in node.outputs}

  def depends(self, variable: int) -> bool:
    """Whether ``variable`` depends on the input."""
    return variable not in self.values

  def dependent_operands(self, node: Node) -> list[int]:
    """Positions of ``node``'s operands that depend on the input."""
    return [i for i, v in enumerate(node.inputs) if self.depends(v)]

  def block(self, source: int, target: int) -> list[Node]:
    """The nodes on paths from ``source`` to ``target``, in order."""
    producers = self.producers
    needed, stack = set(), [target]
    while stack:
      v = stack.pop()
      if v == source or v in needed or not self.depends(v):
        continue
      needed.add(v)
      stack.extend(producers[v].inputs)
    return [n for n in self.nodes if any(v in needed for v in n.outputs)]


def _aval(aval: Any) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct(tuple(aval.shape), aval.dtype)


def _inner_jaxpr(eqn: Any) -> Any:
  for name in _INNER_JAXPR_PARAMS:
    inner = eqn.params.get(name)
    if isinstance(inner, (jex.ClosedJaxpr, jex.Jaxpr)):
      return inner
  return None


def _bind_fn(primitive: Any, params: dict[str, Any]) -> Callable[..., Any]:
  def bind(*operands):
    out = primitive.bind(*operands, **params)
    return out if primitive.multiple_results else [out]

  return bind


class _Flattener:
  """Flattens a closed jaxpr, inlining calls, into nodes over int variables."""

  def __init__(self, keep_call: Callable[[Any], bool]):
    self._ids = itertools.count()
    self._keep_call = keep_call
    self.nodes: list[Node] = []
    self.values: dict[int, Any] = {}
    self.avals: dict[int, jax.ShapeDtypeStruct] = {}

  def new(self, aval: Any) -> int:
    v = next(self._ids)
    self.avals[v] = _aval(aval)
    return v

  def constant(self, value: Any, aval: Any) -> int:
    v = self.new(aval)
    self.values[v] = value
    return v

  def flatten(
      self,
      jaxpr: Any,
      consts: Sequence[Any],
      inputs: Sequence[int],
      context: tuple[Any, ...] = (),
  ) -> list[int]:
    env: dict[Any, int] = {}

    def read(atom):
      if isinstance(atom, jex.Literal):
        return self.constant(atom.val, atom.aval)
      return env[atom]

    for var, value in zip(jaxpr.constvars, consts):
      env[var] = self.constant(value, var.aval)
    for var, v in zip(jaxpr.invars, inputs):
      env[var] = v
    for eqn in jaxpr.eqns:
      operands = [read(atom) for atom in eqn.invars]
      inner = _inner_jaxpr(eqn)
      if (
          eqn.primitive.name in CALL_PRIMITIVES
          and inner is not None
          and not self._keep_call(eqn)
      ):
        if isinstance(inner, jex.ClosedJaxpr):
          inner_jaxpr, inner_consts = inner.jaxpr, inner.consts
        else:
          inner_jaxpr, inner_consts = inner, ()
        if len(inner_jaxpr.invars) == len(operands):
          results = self.flatten(
              inner_jaxpr,
              inner_consts,
              operands,
              (eqn.source_info, *context),
          )
          for var, v in zip(eqn.outvars, results):
            env[var] = v
          continue
      outputs = tuple(self.new(var.aval) for var in eqn.outvars)
      for var, v in zip(eqn.outvars, outputs):
        env[var] = v
      self.nodes.append(
          Node(
              primitive=eqn.primitive.name,
              bind=_bind_fn(eqn.primitive, eqn.params),
              params=dict(eqn.params),
              inputs=tuple(operands),
              outputs=outputs,
              in_avals=tuple(self.avals[v] for v in operands),
              out_avals=tuple(self.avals[v] for v in outputs),
              source_info=(eqn.source_info, *context),
          )
      )
    return [read(atom) for atom in jaxpr.outvars]


def _dominators(
    input_var: int, nodes: Iterable[Node], depends: Callable[[int], bool]
) -> dict[int, int]:
  """Immediate dominators of the dependent variables (nodes in order)."""
  idom: dict[int, int] = {}
  depth = {input_var: 0}

  def common(a, b):
    while a != b:
      if depth[a] < depth[b]:
        a, b = b, a
      a = idom[a]
    return a

  for node in nodes:
    operands = [v for v in node.inputs if depends(v)]
    dominator = operands[0]
    for v in operands[1:]:
      dominator = common(dominator, v)
    for v in node.outputs:
      idom[v] = dominator
      depth[v] = depth[dominator] + 1
  return idom


def trace_graph(
    f: Callable[[jax.Array], jax.Array],
    x_like: Any,
    keep_call: Callable[[Any], bool] = lambda eqn: False,
) -> Graph:
  """Traces ``f`` at ``x_like`` and returns its input-dependent graph.

  Args:
    f: a function of one array returning one array.
    x_like: an array or ``jax.ShapeDtypeStruct`` (batch axis included).
    keep_call: whether a call equation stays one node (not inlined).

  Returns:
    The :class:`Graph`; constant nodes are evaluated on the way.

  Raises:
    ValueError: if ``f`` does not return one array, or its output does not
      depend on its input.
  """
  x_like = jax.ShapeDtypeStruct(tuple(x_like.shape), x_like.dtype)
  closed = jax.make_jaxpr(f)(x_like)
  if len(closed.jaxpr.outvars) != 1 or len(closed.jaxpr.invars) != 1:
    raise ValueError(
        'backtrack needs a function of one array that returns one array; '
        f'this one returns {len(closed.jaxpr.outvars)} arrays'
    )
  flat = _Flattener(keep_call)
  input_var = flat.new(x_like)
  (output,) = flat.flatten(closed.jaxpr, closed.consts, [input_var])
  dependent = {input_var}
  nodes = []
  for node in flat.nodes:
    if any(v in dependent for v in node.inputs):
      dependent.update(node.outputs)
      nodes.append(node)
    else:
      operands = [flat.values[v] for v in node.inputs]
      if any(isinstance(o, jax.core.Tracer) for o in operands):
        results = node.bind(*operands)
      else:  # Stays concrete inside an outer trace, so rules can read it.
        with jax.ensure_compile_time_eval():
          results = node.bind(*operands)
      for v, value in zip(node.outputs, results):
        flat.values[v] = value
  if output not in dependent:
    raise ValueError(
        "backtrack: the function's output does not depend on its input"
    )
  # Keep only the nodes that lead to the output.
  needed, live = {output}, []
  for node in reversed(nodes):
    if any(v in needed for v in node.outputs):
      live.append(node)
      needed.update(v for v in node.inputs if v in dependent)
  live.reverse()
  return Graph(
      input=input_var,
      output=output,
      nodes=live,
      values=flat.values,
      avals=flat.avals,
      idom=_dominators(input_var, live, lambda v: v in dependent),
  )


def source_summary(node: Node) -> str | None:
  """Where ``node`` comes from: ``f``'s line and the innermost user frame.

  ``None`` when the traceback holds no frame outside JAX.
  """
  try:
    from jax._src import source_info_util  # pylint: disable=g-import-not-at-top

    frames = []
    for info in node.source_info:
      frames = list(source_info_util.user_frames(info.traceback))
      if frames:
        break
  except Exception:  # noqa: BLE001 (private API; the message stays useful)
    frames = []
  if not frames:
    return None

  def describe(frame):
    return f'{frame.file_name}:{frame.start_line} ({frame.function_name})'

  inner = describe(frames[0])
  outer = next(
      (
          describe(frame)
          for frame in frames
          if not any(
              part in frame.file_name
              for part in ('site-packages', 'bort_jax/explain')
          )
      ),
      None,
  )
  if outer is None or outer == inner:
    return inner
  return f'{outer}, in {inner}'
