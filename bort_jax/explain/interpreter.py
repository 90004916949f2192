r"""The backtracking map of any JAX function: ``backtrack(f, x_like)``.

:func:`backtrack` is a function transformation in the spirit of
:func:`jax.linear_transpose`: it traces ``f`` (any function of one array,
its parameters closed over: ``lambda x: model(x)`` for an NNX module,
``functools.partial(linen_model.apply, variables)`` for linen, a plain
function of arrays) and returns ``g``, which maps a representation
``z = f(x)`` back to input space by running ``f``'s primitives backwards,
one rule each (:mod:`~bort_jax.explain.rules`). ``g`` is pure: it works
under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

**Methods.** ``method='transpose'`` is the Bort paper's map: Dense and Conv
by their transposed weights with a per-unit scaling, exact inverses for
constant arithmetic, activations, reshapes and normalisation in eval mode,
pooling by upsampling. It is the inverse when the weights are orthogonal
(what Bort trains for). ``method='pinv'`` is the fair baseline for models
not trained with Bort: every linear primitive by least squares (the
pseudo-inverse of a Dense kernel, conjugate gradients on a convolution), the
rest as under ``'transpose'``.

**Joins.** Where two operands of a primitive depend on the input, the
sub-graph from their last common variable :math:`h` (its dominator) to the
primitive's output is inverted as a block:

* LeakyReLU written as ``select_n(h >= 0, s h, h)`` or ``max(h, s h)``
  (``s > 0``): exact, the sign of the output tells the branch;
* a residual addition :math:`y = S(h) + F(h)`, :math:`S` the branch with
  fewer primitives (the shortcut, often the identity): under
  ``'transpose'`` the fixed-point iteration
  :math:`h_{k+1} = S^{-1}(y - F(h_k))` from :math:`h_0 = S^{-1}(y)`,
  ``residual_iterations`` times, keeping the iterate whose residual
  :math:`\lVert S(h_k) + F(h_k) - y\rVert` is smallest. It converges to the
  block's inverse when :math:`F \circ S^{-1}` is a contraction (Lipschitz
  constant below 1, as in invertible ResNets); otherwise the best iterate
  is an approximation, no inverse. Under ``'pinv'``:
  ``gauss_newton_steps`` Gauss-Newton steps on
  :math:`\lVert S(h) + F(h) - y\rVert^2` from :math:`S^{+}(y)`, each solved
  by conjugate gradients on the linearisation (``maxiter``, ``tol``),
  keeping the iterate of smallest residual (the start included); locally
  convergent where the linearisation has full column rank;
* any other block (attention, LayerNorm, GELU): Gauss-Newton under
  ``'pinv'`` from 0; no map under ``'transpose'``.

**Extension.** ``rules={'primitive_name': rule}`` adds or replaces a
primitive's rule (see :mod:`~bort_jax.explain.rules` for the signature);
:func:`custom_inverse` declares the inverse of a whole sub-function. A
primitive with no rule fails when ``backtrack`` is called, with a
``ValueError`` naming the primitive, the line of ``f`` it comes from, and
both ways out.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from bort_jax.explain import backtrack
  >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (4, 4)))
  >>> f = lambda x: jax.nn.leaky_relu(x @ q + 1.0, 0.5)
  >>> x = jax.random.normal(jax.random.key(1), (2, 4))
  >>> g = backtrack(f, x)
  >>> bool(jnp.allclose(g(f(x)), x, atol=1e-5))
  True
"""

from __future__ import annotations

import functools
import itertools
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bort_jax.explain import kernels
from bort_jax.explain.graph import Graph, Node, source_summary, trace_graph
from bort_jax.explain.rules import RULES, Equation, Rule, Settings

__all__ = ['backtrack', 'custom_inverse']

_CUSTOM_INVERSES: weakref.WeakValueDictionary[str, Callable[..., Any]] = (
    weakref.WeakValueDictionary()
)
_CUSTOM_NAMES = itertools.count()
_CALLS = ('pjit', 'jit')


def custom_inverse(
    fun: Callable[[jax.Array], jax.Array],
    inverse: Callable[[jax.Array], jax.Array],
) -> Callable[[jax.Array], jax.Array]:
  """Declares the backtracking map of a sub-function.

  ``fun`` runs as before; inside a function given to :func:`backtrack`, its
  output is mapped back by ``inverse`` instead of by the rules of its
  primitives (e.g. an attention block, a layer of the user's own, or a
  sub-function with a known closed-form inverse).

  Args:
    fun: a function of one array returning one array.
    inverse: ``inverse(y) -> x``, traceable, with ``x`` of ``fun``'s input
      shape.

  Returns:
    A function that computes ``fun`` and carries ``inverse``.

  Example:
    >>> import jax.numpy as jnp
    >>> from bort_jax.explain import backtrack, custom_inverse
    >>> cube = custom_inverse(lambda x: x**3, jnp.cbrt)
    >>> g = backtrack(lambda x: cube(x) + 1.0, jnp.zeros(3))
    >>> g(jnp.array([9.0, 2.0, 0.0])).round(4)
    Array([ 2.,  1., -1.], dtype=float32)
  """
  if not callable(fun) or not callable(inverse):
    raise ValueError('custom_inverse needs two callables: fun and inverse')
  name = f'bort_custom_inverse_{next(_CUSTOM_NAMES)}'

  def call(x):
    return fun(x)

  call.__name__ = call.__qualname__ = name
  jitted = jax.jit(call)

  @functools.wraps(fun)
  def wrapped(x):
    return jitted(x)

  wrapped.bort_inverse = inverse  # Keeps the registry entry alive.
  _CUSTOM_INVERSES[name] = inverse
  return wrapped


def _custom_inverse_of(eqn_or_node: Any) -> Callable[..., Any] | None:
  primitive = getattr(eqn_or_node, 'primitive', None)
  name = getattr(primitive, 'name', primitive)
  if name not in _CALLS:
    return None
  return _CUSTOM_INVERSES.get(eqn_or_node.params.get('name'))


# --- Plans: what g does, decided (and checked) when backtrack is called ----


class _Step(NamedTuple):
  """Estimates ``targets`` from the estimate of ``node``'s outputs."""

  node: Node
  targets: tuple[int, ...]
  apply: Callable[[Any], tuple[jax.Array, ...]]


class _Plan(NamedTuple):
  source: int
  target: int
  steps: tuple[_Step, ...]

  def run(self, y: jax.Array) -> jax.Array:
    estimates: dict[int, list[jax.Array]] = {self.target: [y]}
    for step in self.steps:
      outputs = tuple(
          _combine(estimates.get(v), aval)
          for v, aval in zip(step.node.outputs, step.node.out_avals)
      )
      for v, x in zip(step.targets, step.apply(outputs)):
        estimates.setdefault(v, []).append(x)
    return _combine(estimates[self.source], None)


def _combine(values: list[jax.Array] | None, aval) -> jax.Array:
  """The mean of a variable's estimates (one per consumer); 0 if none."""
  if not values:
    return jnp.zeros(aval.shape, aval.dtype)
  return values[0] if len(values) == 1 else sum(values) / len(values)


def _function_name(f: Any) -> str:
  while isinstance(f, functools.partial):
    f = f.func
  return getattr(f, '__qualname__', None) or type(f).__name__


def _no_rule_error(
    node: Node, settings: Settings, f: Any, why: str = ''
) -> ValueError:
  where = source_summary(node) or f'the function {_function_name(f)}'
  return ValueError(
      f'backtrack: no {settings.method!r} rule for the primitive '
      f"'{node.primitive}'{why}, from {where}. Declare one with "
      f"backtrack(..., rules={{'{node.primitive}': rule}}) (or wrap the "
      'sub-function in bort_jax.explain.custom_inverse), or use '
      "method='pinv' (least squares)"
  )


class _Planner:
  """Builds the plans of a graph under one method and rule table."""

  def __init__(
      self,
      graph: Graph,
      rules: Mapping[str, Rule],
      settings: Settings,
      function: Any = None,
  ):
    self.function = function
    self.graph = graph
    self.rules = rules
    self.settings = settings
    self.producers = graph.producers

  def operands(self, node: Node, index: int) -> tuple[Any, ...]:
    return tuple(
        None if i == index else self.graph.values[v]
        for i, v in enumerate(node.inputs)
    )

  def plan(self, source: int, target: int) -> _Plan:
    nodes = self.graph.block(source, target)
    pending, consumed, steps = {target}, set(), []
    for node in reversed(nodes):
      if id(node) in consumed or not any(v in pending for v in node.outputs):
        continue
      step, inside = self.step(node)
      consumed.update(id(n) for n in inside)
      pending.update(step.targets)
      steps.append(step)
    return _Plan(source, target, tuple(steps))

  def step(self, node: Node) -> tuple[_Step, list[Node]]:
    """The step that inverts ``node``, and the nodes it covers."""
    graph = self.graph
    dependent = graph.dependent_operands(node)
    inverse = _custom_inverse_of(node)
    if inverse is not None:
      (index,) = dependent
      return (
          _Step(node, (node.inputs[index],), lambda ys: (inverse(ys[0]),)),
          [node],
      )
    if len(dependent) == 1 or node.primitive == 'concatenate':
      rule = self.rules.get(node.primitive)
      if rule is not None:
        return self.rule_step(node, rule, dependent), [node]
      if self.settings.method != 'pinv':
        raise _no_rule_error(node, self.settings, self.function)
    return self.join_step(node)

  def rule_step(self, node: Node, rule: Rule, dependent) -> _Step:
    equations = [
        Equation(node, self.operands(node, i), i, self.settings)
        for i in dependent
    ]
    single = len(node.outputs) == 1

    def apply(ys):
      y = ys[0] if single else tuple(ys)
      return tuple(rule(eqn, y) for eqn in equations)

    return _Step(node, tuple(node.inputs[i] for i in dependent), apply)

  def join_step(self, node: Node) -> tuple[_Step, list[Node]]:
    (output,) = node.outputs
    source = self.graph.idom[output]
    inside = self.graph.block(source, output)
    invert = self.activation_join(node, source)
    if invert is None and node.primitive in ('add', 'add_any', 'sub'):
      invert = self.residual_join(node, source, output)
    if invert is None:
      if self.settings.method != 'pinv':
        raise _no_rule_error(
            node,
            self.settings,
            self.function,
            ' with several operands that depend on the input',
        )
      invert = self.gauss_newton(source, output, None)
    return _Step(node, (source,), lambda ys: (invert(ys[0]),)), inside

  # --- Joins ----------------------------------------------------------------

  def _positive_scale(self, v: int, h: int) -> float | None:
    """``s`` if ``v`` is ``h`` (1.0) or ``s * h`` with a constant ``s > 0``."""
    if v == h:
      return 1.0
    node = self.producers.get(v)
    if node is None or node.primitive != 'mul':
      return None
    dependent = self.graph.dependent_operands(node)
    if len(dependent) != 1 or node.inputs[dependent[0]] != h:
      return None
    index = dependent[0]
    scale = self.graph.values[node.inputs[1 - index]]
    try:
      scale = np.asarray(scale)
    except (TypeError, jax.errors.TracerArrayConversionError):
      return None
    if scale.size != 1 or not float(scale.reshape(())) > 0:
      return None
    return float(scale.reshape(()))

  def activation_join(self, node: Node, h: int) -> Callable | None:
    """LeakyReLU as ``select_n(cmp(h, 0), ...)`` or ``max``/``min(h, s h)``."""
    if node.primitive in ('max', 'min') and len(node.inputs) == 2:
      scales = [self._positive_scale(v, h) for v in node.inputs]
      if None in scales:
        return None
      high, low = max(scales), min(scales)
      if node.primitive == 'min':
        high, low = low, high
      return lambda y: jnp.where(y >= 0, y / high, y / low)
    if node.primitive != 'select_n' or len(node.inputs) < 2:
      return None
    predicate = self.producers.get(node.inputs[0])
    if predicate is None or predicate.primitive not in ('ge', 'gt', 'le', 'lt'):
      return None
    (index,) = self.graph.dependent_operands(predicate) or (None,)
    if index is None or predicate.inputs[index] != h:
      return None
    try:
      zero = np.asarray(self.graph.values[predicate.inputs[1 - index]])
    except (TypeError, jax.errors.TracerArrayConversionError):
      return None
    scales = [self._positive_scale(v, h) for v in node.inputs[1:]]
    if np.any(zero != 0) or None in scales:
      return None
    operands = self.operands(predicate, index)

    def invert(y):
      equation = Equation(predicate, operands, index, self.settings)
      (which,) = [equation.forward(y)]
      return lax.select_n(which, *(y / s for s in scales))

    return invert

  def residual_join(self, node: Node, h: int, output: int) -> Callable:
    """``y = S(h) ± F(h)``: fixed point (transpose) or Gauss-Newton (pinv)."""
    a, b = node.inputs
    branch = {v: self.graph.block(h, v) for v in (a, b)}
    shortcut = a if len(branch[a]) <= len(branch[b]) else b
    residual = b if shortcut == a else a
    # y = S + F, y = S - F (S first) or y = F - S (S second).
    sign = -1.0 if node.primitive == 'sub' and shortcut == a else 1.0
    flip = node.primitive == 'sub' and shortcut == b
    inverse_s = self.plan(h, shortcut) if shortcut != h else None
    evaluate_f = self.evaluator(h, residual)
    block = self.evaluator(h, output)

    def invert_s(v):
      return v if inverse_s is None else inverse_s.run(v)

    def target_of_s(y, h_k):
      f = evaluate_f(h_k)
      return f - y if flip else y - sign * f

    def start(y):
      return invert_s(-y if flip else y)

    if self.settings.method == 'pinv':
      return self.gauss_newton(h, output, start)

    def invert(y):
      return _keep_best(
          lambda h_k: invert_s(target_of_s(y, h_k)),
          lambda h_k: jnp.sum(jnp.square(block(h_k) - y)),
          start(y),
          self.settings.residual_iterations,
      )

    return invert

  def evaluator(self, source: int, target: int) -> Callable:
    """Runs the graph forward from ``source`` to ``target``."""
    nodes = self.graph.block(source, target)
    values = self.graph.values

    def evaluate(x):
      env = {source: x}
      for node in nodes:
        operands = [env[v] if v in env else values[v] for v in node.inputs]
        for v, out in zip(node.outputs, node.bind(*operands)):
          env[v] = out
      return env[target]

    return evaluate

  def gauss_newton(self, source: int, target: int, start) -> Callable:
    """Gauss-Newton on ``|B(h) - y|^2``, ``B`` the block source -> target."""
    block = self.evaluator(source, target)
    settings = self.settings
    aval = self.graph.avals[source]

    def invert(y):
      def step(_, h):
        out, linear = jax.linearize(block, h)
        (transpose,) = (jax.linear_transpose(linear, h),)

        def normal(d):
          (d,) = transpose(linear(d))
          return d

        (rhs,) = transpose(y - out)
        delta, _ = jax.scipy.sparse.linalg.cg(
            normal, rhs, tol=settings.tol, atol=0.0, maxiter=settings.maxiter
        )
        return h + delta

      h_0 = jnp.zeros(aval.shape, aval.dtype) if start is None else start(y)
      return _keep_best(
          functools.partial(step, None),
          lambda h: jnp.sum(jnp.square(block(h) - y)),
          h_0,
          settings.gauss_newton_steps,
      )

    return invert


def _keep_best(
    step: Callable[[jax.Array], jax.Array],
    residual: Callable[[jax.Array], jax.Array],
    start: jax.Array,
    iterations: int,
) -> jax.Array:
  """Iterates ``h <- step(h)``; returns the iterate of smallest residual.

  The start counts, so the result is never worse than it; a NaN residual is
  never the smallest.
  """

  def body(_, carry):
    h, best, best_residual = carry
    h = step(h)
    r = residual(h)
    better = r < best_residual
    return h, jnp.where(better, h, best), jnp.where(better, r, best_residual)

  carry = (start, start, residual(start))
  return lax.fori_loop(0, iterations, body, carry)[1]


def _rule_table(rules: Mapping[Any, Rule] | None) -> dict[str, Rule]:
  table = dict(RULES)
  for primitive, rule in (rules or {}).items():
    name = getattr(primitive, 'name', primitive)
    if not isinstance(name, str) or not callable(rule):
      raise ValueError(
          'rules maps primitives (or their names) to callables '
          f'rule(eqn, y); got {primitive!r}: {rule!r}'
      )
    table[name] = rule
  return table


def _check_settings(settings: Settings) -> None:
  kernels.check_method(settings.method)
  kernels.check_scaling(settings.scaling)
  for name, least in (
      ('maxiter', 1),
      ('residual_iterations', 0),
      ('gauss_newton_steps', 0),
  ):
    value = getattr(settings, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      what = 'a positive' if least else 'a non-negative'
      raise ValueError(f'{name} must be {what} int, got {value!r}')
  if not settings.tol > 0 or not settings.eps >= 0:
    raise ValueError(
        f'tol must be positive and eps non-negative, got tol={settings.tol}, '
        f'eps={settings.eps}'
    )


def backtrack(
    f: Callable[[jax.Array], jax.Array],
    x_like: Any,
    method: str = 'transpose',
    *,
    scaling: str = 'auto',
    eps: float = 1e-8,
    maxiter: int = kernels.PINV_MAXITER,
    tol: float = kernels.PINV_TOL,
    residual_iterations: int = 20,
    gauss_newton_steps: int = 5,
    rules: Mapping[Any, Rule] | None = None,
) -> Callable[[jax.Array], jax.Array]:
  r"""The backtracking map ``g`` of ``f``: from ``f``'s output to its input.

  Args:
    f: a function of one array (batch axis first) returning one array, with
      its parameters closed over; NumPy or JAX arrays.
    x_like: an input array or ``jax.ShapeDtypeStruct`` (batch axis
      included); ``g`` is built for that shape.
    method: ``'transpose'`` (the Bort paper's transposed weights) or
      ``'pinv'`` (least squares).
    scaling: per-unit scaling of the transposed weights
      (:func:`~bort_jax.explain.kernels.unit_scales`).
    eps: added to the scaling divisors.
    maxiter, tol: conjugate-gradient iterations and relative tolerance of the
      least-squares solves (``'pinv'``).
    residual_iterations: fixed-point iterations of a residual block
      (``'transpose'``).
    gauss_newton_steps: Gauss-Newton steps of a block without a rule
      (``'pinv'``).
    rules: extra or replacement rules, ``{primitive or name: rule}``.

  Returns:
    ``g(z)``: ``z`` of ``f``'s output shape to an array of ``x_like``'s
    shape. Pure; jittable, vmappable, differentiable.

  Raises:
    ValueError: a primitive without a rule under ``'transpose'`` (naming the
      primitive and the line of ``f``), a bad option, or an ``f`` whose
      output does not depend on its input.

  Example:
    >>> import functools, jax, jax.numpy as jnp
    >>> from bort_jax.explain import backtrack
    >>> kernel = jnp.linalg.qr(jax.random.normal(jax.random.key(0), (4, 4)))[0]
    >>> f = lambda x: jax.lax.conv_general_dilated(
    ...     x, kernel.reshape(2, 2, 1, 4), (2, 2), 'VALID',
    ...     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    >>> x = jax.random.normal(jax.random.key(1), (1, 4, 4, 1))
    >>> g = jax.jit(backtrack(f, x))
    >>> bool(jnp.allclose(g(f(x)), x, atol=1e-5))
    True
  """
  settings = Settings(
      method=method,
      scaling=scaling,
      eps=eps,
      maxiter=maxiter,
      tol=tol,
      residual_iterations=residual_iterations,
      gauss_newton_steps=gauss_newton_steps,
  )
  _check_settings(settings)
  table = _rule_table(rules)
  graph = trace_graph(
      f, x_like, keep_call=lambda eqn: _custom_inverse_of(eqn) is not None
  )
  plan = _Planner(graph, table, settings, f).plan(graph.input, graph.output)
  expected = graph.avals[graph.output]

  def g(z: jax.Array) -> jax.Array:
    if tuple(z.shape) != tuple(expected.shape):
      raise ValueError(
          f'g expects outputs of f of shape {tuple(expected.shape)}, got '
          f'{tuple(z.shape)}'
      )
    return plan.run(jnp.asarray(z, expected.dtype))

  return g
