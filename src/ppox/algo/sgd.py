"""Minibatch SGD that every algorithm can call: the optimizer and its learning-rate
schedule, the flat-parameter layout, minibatches by rows or by whole env sequences, and
the epochs x minibatches loop over a loss.

During the update the parameters are one flat float32 vector (``ravel_pytree``), and the
optimizer state lives in that layout between updates: the gradient-norm clip and Adam then
run as a handful of fused ops on one buffer instead of a few ops per weight matrix, which is
a sizeable share of a small network's SGD step. Per epoch the batch is shuffled with one
gather (memory: one batch), advantages are normalized per minibatch for all minibatches at
once, and the minibatches are packed into one float32 block (``ppox.packing``), so the
sequential SGD loop does nothing but the gradient step.

Minibatches are rows of the flattened ``[T * B]`` batch for feed-forward policies, and whole
env sequences (``[T, B / M]``: envs shuffled, not rows, with each sequence's start carry)
for recurrent ones, so the update replays each sequence as the rollout ran it.

``SGD.run_measured`` also returns the loss's diagnostics from the SGD steps' own forward
passes (the last epoch's minibatches), and can stop an update's remaining epochs once an
epoch's mean approximate KL exceeds a bound, inside the program (a flag in the epoch scan's
carry and a ``lax.cond``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax import lax
from jax.flatten_util import ravel_pytree

from ppox.algo.base import AlgoSetup, UpdateContext
from ppox.config import HParams, PPOConfig
from ppox.losses import normalize_advantages
from ppox.nets import Params
from ppox.packing import pack, unpack
from ppox.parallel.split import SplitParams, clip_by_global_norm_across

Loss = Callable[[Params, Any, Any], tuple[jax.Array, dict[str, jax.Array]]]


@struct.dataclass
class OptState:
    """Flat parameters (or, under network splitting, this device's own vector) and the
    optimizer state over them."""

    params: jax.Array
    opt_state: Any


@struct.dataclass
class EpochState:
    """The epoch scan's carry: the optimizer state, the mean of the loss's ``aux`` over the
    minibatches of the last epoch that ran, and (under a KL stop) whether an epoch's KL has
    exceeded the bound and how many epochs ran."""

    opt: OptState
    aux: Any
    stopped: jax.Array
    epochs: jax.Array


Aux = dict[str, jax.Array]


@dataclass(frozen=True, eq=False)
class Objective:
    """A loss to minimize by SGD. ``loss(params, mb, key) -> (total, aux)`` on one minibatch,
    ``aux`` a dict of scalars (the loss's parts and diagnostics; ``"approx_kl"`` for the KL
    stop). Under network splitting also its two separable parts, ``actor(actor params, mb,
    key)`` and ``critic(critic params, mb)``, each ``-> (part, aux of that part)``: the parts
    sum to ``loss``'s total, and ``combine`` maps the two parts' aux, summed (each part's
    keys, zeros for the other's), to ``loss``'s aux (e.g. adds the total)."""

    loss: Loss
    actor: Callable[[Params, Any, Any], tuple[jax.Array, Aux]] | None = None
    critic: Callable[[Params, Any], tuple[jax.Array, Aux]] | None = None
    combine: Callable[[Aux], Aux] | None = None


def flat_params(params: Params) -> tuple[jax.Array, Any]:
    """The parameter pytree as one flat float32 vector, and the function that undoes it."""
    return ravel_pytree(params)


def critic_mask(params: Params) -> jax.Array:
    """``[P] bool``: which entries of the flat parameter vector are the critic's."""
    marks = {k: jax.tree.map(lambda x, c=(k == "critic"): jnp.full(x.shape, c, jnp.float32), v)
             for k, v in params.items()}
    return ravel_pytree(marks)[0] > 0.5


def learning_rate(cfg: PPOConfig, hp: HParams, update_idx: jax.Array) -> jax.Array:
    """The learning rate during update ``update_idx`` (0-based): ``lr`` or, annealed, ``lr *
    (1 - update_idx / num_updates)``. The one schedule: the optimizer and the metrics use it."""
    if not cfg.anneal_lr:
        return jnp.asarray(hp.learning_rate, jnp.float32)
    return hp.learning_rate * (1.0 - update_idx / cfg.num_updates)


def clip_by_norm_per_network(max_norm: Any,
                             critic: jax.Array) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` applied to the actor's and the critic's entries of one
    flat gradient vector (``critic``: the mask of the critic's entries) separately."""

    def init_fn(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates: jax.Array, state: optax.EmptyState, params: Any = None):
        del params
        sq = jnp.square(updates)
        norms = jnp.sqrt(jnp.stack([jnp.sum(jnp.where(critic, 0.0, sq)),
                                    jnp.sum(jnp.where(critic, sq, 0.0))]))
        scale = jnp.where(norms < max_norm, 1.0, max_norm / norms)
        return updates * jnp.where(critic, scale[1], scale[0]), state

    return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(cfg: PPOConfig, hp: HParams, split_axis: str | None = None,
                   critic: jax.Array | None = None,
                   steps_per_update: int | None = None) -> optax.GradientTransformation:
    """The gradient clip (``max_grad_norm``, see ``PPOConfig.grad_clip``) then Adam (eps
    1e-5) at ``learning_rate``, which drops once per update (``steps_per_update`` optimizer
    steps; default ``update_epochs * num_minibatches``).

    ``per_network`` clips the actor's and the critic's entries each to the bound
    (``critic``: the mask of the critic's entries, see ``critic_mask``). ``split_axis``:
    under network splitting each device's vector is one network, and a global norm is taken
    across the devices. The schedule is always a function of the step count, annealed or
    not, so the optimizer state has the same structure either way.
    """
    steps = steps_per_update or cfg.update_epochs * cfg.num_minibatches
    schedule = lambda count: learning_rate(cfg, hp, count // steps)
    if cfg.grad_clip == "per_network" and split_axis is None:
        if critic is None:
            raise ValueError("grad_clip='per_network' needs the critic mask (critic_mask)")
        clip = clip_by_norm_per_network(hp.max_grad_norm, critic)
    elif cfg.grad_clip == "global" and split_axis is not None:
        clip = clip_by_global_norm_across(hp.max_grad_norm, split_axis)
    else:  # global on one device, or one network per device
        clip = optax.clip_by_global_norm(hp.max_grad_norm)
    return optax.chain(clip, optax.adam(learning_rate=schedule, eps=1e-5))


@dataclass(frozen=True, eq=False)
class SGD:
    """Minibatch SGD of the flat parameters for one run's setup: builds the optimizer for
    the layout (network splitting: each device its own network) and runs the loop."""

    setup: AlgoSetup
    steps_per_update: int | None = None

    def split(self, params: Params) -> SplitParams | None:
        axis = self.setup.layout.split_axis
        return None if axis is None else SplitParams.of(params, axis)

    def optimizer(self, hp: HParams, params: Params) -> optax.GradientTransformation:
        cfg, split = self.setup.cfg, self.split(params)
        mask = critic_mask(params) if cfg.grad_clip == "per_network" and split is None else None
        return make_optimizer(cfg, hp, split.axis_name if split else None, mask,
                              self.steps_per_update)

    def init(self, params: Params, hp: HParams) -> Any:
        """The optimizer state over the flat parameters (under network splitting, over this
        device's own network)."""
        split = self.split(params)
        own = flat_params(params)[0] if split is None else split.own(params)
        return self.optimizer(hp, params).init(own)

    def run(self, hp: HParams, objective: Objective, batch: Any, carry: Any, params: Params,
            opt_state: Any, perms: jax.Array, keys: jax.Array | None) -> tuple[Params, Any]:
        """``perms.shape[0]`` epochs over ``batch``; returns the new parameters (the full
        tree on every device) and optimizer state.

        ``batch``: rows ``[N, ...]`` (``carry`` None) or time-major sequences ``[T, B, ...]``
        with their start ``carry [B, ...]``; ``perms [epochs, N or B]``; ``keys``: one PRNG
        key per SGD step ``[epochs, M]`` for losses that need one, else None.
        """
        new, opt_state, _, _ = self._run(hp, objective, batch, carry, params, opt_state, perms,
                                         keys, stop_kl=None, measure=False)
        return new, opt_state

    def run_measured(self, hp: HParams, objective: Objective, batch: Any, carry: Any,
                     params: Params, opt_state: Any, perms: jax.Array, keys: jax.Array | None,
                     stop_kl: Any = None) -> tuple[Params, Any, Aux, jax.Array]:
        """``run`` that also returns the loss's ``aux`` (its parts and diagnostics) averaged
        over the minibatches of the last epoch that ran, each taken with the parameters
        before its own step: every row once, the update's own forward passes reused (no
        pass of its own over the batch), and ``[] int32`` how many epochs ran. Every epoch
        measures (one step body to compile; measuring only the last one needs a second:
        ``benchmarks/results/cpu-2core-amd-epyc-avx512/issue19_log.md`` has both figures).

        With ``stop_kl`` the remaining epochs are skipped once an epoch's mean approximate KL
        (``aux["approx_kl"]``, averaged over the epoch's minibatches and the data-parallel
        devices) exceeds it. The skip is a ``lax.cond`` in the epoch scan: no host round trip
        (under ``vmap`` both branches run and the result is selected, so the epochs are
        skipped in effect, not in time). Under network splitting each device measures its
        own network's part of the aux; the KL (the actor's) is shared once per epoch, the
        whole aux once per update (``Objective.combine``).
        """
        return self._run(hp, objective, batch, carry, params, opt_state, perms, keys, stop_kl,
                         measure=True)

    def _run(self, hp: HParams, objective: Objective, batch: Any, carry: Any, params: Params,
             opt_state: Any, perms: jax.Array, keys: jax.Array | None, stop_kl: Any,
             measure: bool) -> tuple[Params, Any, Aux, jax.Array]:
        split = self.split(params)
        flat, unravel = flat_params(params)
        loop = _Loop(self.setup, hp, objective, self.optimizer(hp, params), split,
                     template=_template(batch, carry is not None), unravel=unravel,
                     measure=measure, stop_kl=stop_kl)
        opt = OptState(flat if split is None else split.own(params), opt_state)
        zero = loop.zero_aux(opt.params, carry, keys)
        loop = dataclasses.replace(loop, aux_tree=jax.tree.structure(zero))
        start = EpochState(opt=opt, aux=zero, stopped=jnp.bool_(False), epochs=jnp.int32(0))
        end, _ = lax.scan(lambda s, xs: loop.epoch(batch, carry, s, xs), start, (perms, keys))
        new, aux = end.opt, end.aux
        if measure and split is not None:  # each device measured its own network's part
            aux = lax.psum(aux, split.axis_name)
        if measure and objective.combine is not None:
            aux = objective.combine(aux)
        new_params = unravel(new.params) if split is None else split.join(new.params)
        return new_params, new.opt_state, aux, end.epochs


def _template(batch: Any, sequences: bool) -> Any:
    """One row (or one env's sequence) of the batch, for unpacking packed minibatches."""
    return jax.tree.map(lambda x: x[:, :1] if sequences else x[:1], batch)


@dataclass(frozen=True, eq=False)
class _Loop:
    setup: AlgoSetup
    hp: HParams
    objective: Objective
    tx: optax.GradientTransformation
    split: SplitParams | None
    template: Any
    unravel: Any
    measure: bool
    stop_kl: Any
    aux_tree: Any = None  # the aux's structure (its values are scalars, stacked per step)

    @property
    def uses_aux(self) -> bool:
        """Whether the steps keep the loss's aux: to report it, or for the KL stop."""
        return self.measure or self.stop_kl is not None

    def loss(self, flat: jax.Array, mb: Any, key: jax.Array | None) -> tuple[jax.Array, Aux]:
        """This device's loss and its aux (under network splitting: this device's network's
        part of it, zeros for the other's)."""
        obj, split = self.objective, self.split
        if split is None:
            return obj.loss(self.unravel(flat), mb, key)
        assert obj.actor is not None and obj.critic is not None
        return split.own_loss(lambda p: obj.actor(p, mb, key), lambda p: obj.critic(p, mb), flat)

    def grads(self, flat: jax.Array, mb: Any, key: jax.Array | None) -> tuple[jax.Array, Aux]:
        """The gradient of ``loss`` and its aux."""
        return jax.grad(lambda f: self.loss(f, mb, key), has_aux=True)(flat)

    def zero_aux(self, flat: jax.Array, carry: Any, keys: jax.Array | None) -> Aux:
        """Zeros shaped like the aux (the forward loss traced on the template minibatch,
        shapes only; tracing the gradient too added ~0.04 s to CartPole's chunk trace)."""
        if not self.uses_aux:
            return {}
        mb = self.template if carry is None else self.template.replace(
            carry=jax.tree.map(lambda c: c[:1], carry))
        key = None if keys is None else keys[0, 0]
        shapes = jax.eval_shape(lambda f: self.loss(f, mb, key)[1], flat)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def step(self, opt: OptState,
             xs: tuple[Any, Any, jax.Array | None]) -> tuple[OptState, jax.Array | None]:
        """One minibatch (packed ``[mb, F]`` rows or ``[T, b, F]`` sequences): gradient,
        mean over the data-parallel devices, clip, Adam. Returns the aux measured before
        the step, its values stacked (None unless it is used)."""
        packed, carry, key = xs
        seq = carry is not None
        mb = unpack(packed, self.template, batch_ndim=2 if seq else 1)
        if seq:
            mb = mb.replace(carry=carry)
        grads, aux = self.grads(opt.params, mb, key)
        grads = self.setup.layout.pmean(grads)
        updates, opt_state = self.tx.update(grads, opt.opt_state, opt.params)
        # the aux as one vector: one write into the scan's outputs per step, not one per value
        used = jnp.stack(jax.tree.leaves(aux)) if self.uses_aux else None
        return OptState(optax.apply_updates(opt.params, updates), opt_state), used

    def run_epoch(self, batch: Any, carry: Any, opt: OptState, perm: jax.Array,
                  keys: jax.Array | None) -> tuple[OptState, Aux]:
        """One epoch; the aux averaged over its minibatches."""
        packed, carries = minibatches(self.setup.cfg, batch, carry, perm)
        opt, stacked = lax.scan(self.step, opt, (packed, carries, keys))
        if stacked is None:
            return opt, {}
        return opt, jax.tree.unflatten(self.aux_tree, list(jnp.mean(stacked, axis=0)))

    def shared_kl(self, kl: jax.Array) -> jax.Array:
        """This device's KL -> the run's: the mean over data-parallel devices, or under
        network splitting the actor's device's."""
        if self.split is not None:
            return lax.psum(kl, self.split.axis_name)
        return self.setup.layout.pmean(kl)

    def epoch(self, batch: Any, carry: Any, state: EpochState,
              xs: tuple[jax.Array, jax.Array | None]) -> tuple[EpochState, None]:
        """One epoch, unless (under a KL stop) an earlier one's mean KL exceeded the bound."""
        perm, keys = xs
        if self.stop_kl is None:
            opt, aux = self.run_epoch(batch, carry, state.opt, perm, keys)
            return state.replace(opt=opt, aux=aux if self.measure else state.aux,
                                 epochs=state.epochs + 1), None
        run = lambda s: self.run_epoch(batch, carry, s.opt, perm, keys)
        opt, aux = lax.cond(state.stopped, lambda s: (s.opt, s.aux), run, state)
        kl = jnp.where(state.stopped, 0.0, self.shared_kl(aux["approx_kl"]))
        return EpochState(opt=opt, aux=aux, stopped=state.stopped | (kl > self.stop_kl),
                          epochs=state.epochs + (~state.stopped).astype(jnp.int32)), None


def permutations(key: jax.Array, epochs: int, num_rows: int) -> jax.Array:
    """``[epochs, num_rows] int32``: a random order of the rows per epoch, epochs independent.

    From ``FEISTEL_MIN_ROWS`` rows the order is a keyed pseudo-random permutation, computed
    row by row with no sort (``feistel_permutations``): XLA's CPU sort is branch-bound on
    random keys, and 4 epochs' sorts of 131,072 rows (1024 envs) took ~52 ms of a ~280 ms
    update, against ~0.4 ms for this. Below it, one sort of a single ``uint32`` array: the
    row index in the low ``ceil(log2 N)`` bits of each key, random bits above it (24 or
    more, so two rows tie with probability below 2^-24; a tie keeps index order).
    """
    if num_rows >= FEISTEL_MIN_ROWS:
        return feistel_permutations(key, epochs, num_rows)
    index_bits = max(1, (num_rows - 1).bit_length())
    high = jnp.uint32(~((1 << index_bits) - 1) & 0xFFFFFFFF)
    positions = jnp.broadcast_to(jnp.arange(num_rows, dtype=jnp.uint32), (epochs, num_rows))
    bits = jax.random.bits(key, (epochs, num_rows), jnp.uint32)
    order = lax.sort((bits & high) | positions, dimension=1, is_stable=False)
    return (order & jnp.uint32((1 << index_bits) - 1)).astype(jnp.int32)


# From this many rows the shuffle is a Feistel permutation: with 8 or more index bits each
# round's function has 4+ input bits and mixes fast; below, a sort costs microseconds.
FEISTEL_MIN_ROWS = 256
FEISTEL_ROUNDS = 8


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a bijection of ``uint32`` with full avalanche."""
    h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
    h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def _feistel(round_keys: jax.Array, x: jax.Array, bits: int) -> jax.Array:
    """A bijection of ``[0, 2^bits)``: ``len(round_keys)`` Feistel rounds on ``x``'s high
    and low halves (unbalanced when ``bits`` is odd: the halves swap widths each round),
    round function ``_fmix32(half ^ round key)``. ``round_keys``: ``[rounds, ...]``
    ``uint32``, broadcast against ``x``."""
    hi_bits, lo_bits = bits // 2, bits - bits // 2
    hi, lo = x >> lo_bits, x & jnp.uint32((1 << lo_bits) - 1)
    for round_key in round_keys:
        mixed = _fmix32(lo ^ round_key) & jnp.uint32((1 << hi_bits) - 1)
        hi, lo = lo, hi ^ mixed
        hi_bits, lo_bits = lo_bits, hi_bits
    return (hi << lo_bits) | lo


def feistel_permutations(key: jax.Array, epochs: int, num_rows: int,
                         rounds: int = FEISTEL_ROUNDS) -> jax.Array:
    """``[epochs, num_rows] int32``: per epoch the permutation ``i -> P(i)`` of a keyed
    Feistel network on the ``ceil(log2 N)``-bit row indices, brought into ``[0, N)`` by
    cycle walking (``P`` applied again while the value is ``>= N``, Black and Rogaway 2002;
    under 2 tries per row on average). An index shuffle of the kind TensorFlow's
    ``tf.random.experimental.index_shuffle`` and Grain use: elementwise, no sort, a fresh
    32-bit random key per round and epoch. Not every one of the N! orders is reachable
    (neither is it from any PRNG with a 64-bit seed); each row's position, and which rows
    share a minibatch, are uniform to within the tests' sampling error
    (``tests/unit/test_permutations.py``)."""
    bits = max(1, (num_rows - 1).bit_length())
    round_keys = jax.random.bits(key, (rounds, epochs, 1), jnp.uint32)
    rows = jnp.broadcast_to(jnp.arange(num_rows, dtype=jnp.uint32), (epochs, num_rows))
    order = _feistel(round_keys, rows, bits)
    if num_rows < 1 << bits:
        order = lax.while_loop(
            lambda o: jnp.any(o >= num_rows),
            lambda o: jnp.where(o >= num_rows, _feistel(round_keys, o, bits), o), order)
    return order.astype(jnp.int32)


def minibatches(cfg: PPOConfig, batch: Any, carry: Any,
                perm: jax.Array) -> tuple[jax.Array, Any]:
    """One epoch's minibatches, packed: ``[M, mb, F]`` from rows, or ``[M, T, B / M, F]``
    from env sequences (then also their start carries ``[M, B / M, ...]``).

    A single gather per epoch (memory: one batch), then advantages are normalized per
    minibatch, vectorized over all minibatches at once (outside the sequential SGD loop).
    The batch's ``advantages`` field is the one normalized (if ``normalize_advantages``).
    """
    m = cfg.num_minibatches
    if carry is None:
        shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), batch)
        mbs = jax.tree.map(lambda x: x.reshape(m, -1, *x.shape[1:]), shuffled)
        carries = None
    else:
        shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=1), batch)
        mbs = jax.tree.map(
            lambda x: jnp.moveaxis(x.reshape(x.shape[0], m, -1, *x.shape[2:]), 1, 0), shuffled)
        carries = jax.tree.map(lambda c: jnp.take(c, perm, axis=0).reshape(m, -1, *c.shape[1:]),
                               carry)
    if cfg.normalize_advantages:
        mbs = mbs.replace(advantages=jax.vmap(normalize_advantages)(mbs.advantages))
    return pack(mbs, batch_ndim=2 if carry is None else 3), carries


def flatten_time(x: jax.Array) -> jax.Array:
    """``[T, B, ...] -> [T * B, ...]``."""
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def step_keys(key: jax.Array, cfg: PPOConfig) -> jax.Array:
    """``[epochs, minibatches]`` PRNG keys, one per SGD step."""
    return jax.random.split(key, cfg.update_epochs * cfg.num_minibatches).reshape(
        cfg.update_epochs, cfg.num_minibatches, *key.shape)


__all__ = ["SGD", "EpochState", "Objective", "OptState", "UpdateContext", "critic_mask",
           "feistel_permutations", "flat_params", "flatten_time", "learning_rate",
           "make_optimizer", "minibatches", "permutations", "step_keys"]
