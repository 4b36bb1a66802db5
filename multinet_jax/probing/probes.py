"""Layerwise linear probes: every layer's cross-validated accuracy from one jitted solve over all layers and folds.

Per layer and fold the probe is an L2-regularized logistic regression (binary: one weight vector and a sigmoid;
more than two options: softmax over all of them) on features standardized with the training rows' mean and std,
with scikit-learn's objective: mean log loss + ||W||^2 / (2 C n_train), intercept unpenalized. The (layer, fold)
problems and their label-shuffled controls are solved by one jitted, batched L-BFGS, vmapped over folds and over
the layers of a step (as many layers as fit in a CPU cache; `lax.map` over the steps): every iteration costs two
matmuls of a step's `[layers, n, width]` features with a `[width, problems]` right-hand side, and the line search
reuses the direction's logits, so it costs no pass over the features at all. Standardization is folded into the
weights, so the features are never copied per fold. A probe does not change when a column is shifted by a constant,
and in float32 it must not either: the columns are shifted by their means, and each fold's variance is computed in two
passes (the mean squared deviation from the mean; E[x^2] - mean^2 cancelled to nothing for a dimension whose offset
is ~1000x its spread, as residual streams' massive dimensions are, and left it unscaled: accuracy at chance).

    result = fit_probes(features, labels, groups=item_ids)   # features [n, layers, width]
    result.accuracy          # [layers], each sample predicted once, by the fold that did not train on it
    result.control_accuracy  # [layers], the same probes fitted on shuffled labels (should sit at chance)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from multinet_jax.probing.folds import grouped_folds

LBFGS_MEMORY = 10
# Layers solved together in one step: as many as fit in this many bytes of float32 features (a CPU's last-level
# cache; on accelerators a step of a few layers costs no more than all of them at once).
CACHE_BYTES = 32 * 2**20
_STEP_CANDIDATES = 2.0 ** -np.arange(20)  # backtracking line search: the largest that satisfies Armijo
_ARMIJO = 1e-4


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Cross-validated probe accuracies (fractions) per layer, with their label-shuffled control."""

    accuracy: np.ndarray  # [layers]: correct held-out predictions / n
    fold_accuracy: np.ndarray  # [layers, folds]
    control_accuracy: np.ndarray | None  # [layers], labels shuffled (None when control=False)
    control_fold_accuracy: np.ndarray | None  # [layers, folds]
    folds: np.ndarray  # [n]: each sample's fold
    classes: np.ndarray  # [num_classes]: the distinct labels, sorted; the probe's class k is classes[k]
    class_counts: np.ndarray  # [num_classes]: samples per class
    iterations: np.ndarray  # [layers, folds (+ control and null folds)]: L-BFGS iterations used
    converged: np.ndarray  # [layers, folds (+ control and null folds)]: max |gradient| <= tol before max_iter
    null_accuracy: np.ndarray  # [permutations, layers]: the probes fitted on each of `null_labels` (0 rows: none)

    @property
    def num_classes(self) -> int:
        """Distinct labels (not the largest label + 1: labels {1, 2} are two classes)."""
        return len(self.classes)

    @property
    def chance(self) -> float:
        """The accuracy of always answering the most frequent label, the baseline a probe must beat: 1 / num_classes
        for balanced labels only (3:1 labels: 0.75, where 1 / num_classes = 0.5 would credit a constant answer)."""
        return float(self.class_counts.max() / self.class_counts.sum())

    def unconverged(self) -> dict[str, int]:
        """Fits that reached `max_iter` before `tol`, per label set: `real` (the accuracy's), `control` and `null` (the
        permutation test's): an unconverged real fit makes the accuracy itself suspect, the others only its baselines."""
        folds = self.fold_accuracy.shape[1]
        real_and_control = folds * (1 + (self.control_accuracy is not None))
        unconverged = ~self.converged
        return {"real": int(unconverged[:, :folds].sum()), "control": int(unconverged[:, folds:real_and_control].sum()),
                "null": int(unconverged[:, real_and_control:].sum())}

    @property
    def peak_layer(self) -> int:
        return int(np.argmax(self.accuracy))


def _check(features: np.ndarray, labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Refuses malformed inputs; returns the distinct labels (sorted)."""
    if features.ndim != 3:
        raise ValueError(f"features must be [n, layers, width], got shape {features.shape}")
    if labels.shape != features.shape[:1]:
        raise ValueError(f"labels must be [n] = [{features.shape[0]}], got shape {labels.shape}")
    if groups is not None and np.shape(groups) != labels.shape:
        raise ValueError(f"groups must be [n] = [{features.shape[0]}], got shape {np.shape(groups)}")
    if labels.size == 0:
        raise ValueError("no samples to probe (features hold 0 rows)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError("labels must be non-negative integer class indices")
    if not np.all(np.isfinite(features)):
        raise ValueError("features hold NaN or inf values")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError(f"labels hold a single class ({classes.tolist()}): nothing to probe")
    return classes


def _check_training_classes(folds: np.ndarray, labels: np.ndarray) -> None:
    """Every fold's training samples hold two classes or more: a probe trained on one class predicts it everywhere
    and reads as an accuracy below chance (0 for two balanced classes), where scikit-learn's `LogisticRegression`
    refuses such a fit. Not asked of the control: its labels are shuffled on purpose (on a small task a fold of them
    may hold one class), and what it scores is a baseline, not a finding."""
    for fold in np.unique(folds):
        classes = np.unique(labels[folds != fold])
        if len(classes) < 2:
            raise ValueError(f"fold {fold} trains on a single class ({classes.tolist()}): the groups put every sample "
                             "of the other classes in that fold; use fewer folds or groups that mix the classes")


def fit_probes(
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    num_folds: int = 5,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 100,
    tol: float = 1e-4,
    control: bool = True,
    null_labels: np.ndarray | None = None,
) -> ProbeResult:
    """Per-layer cross-validated accuracy of linear probes predicting `labels` from `features` `[n, layers, width]`.

    `groups` `[n]` keeps samples of a group in one fold (default: every sample its own group); folds come from
    `grouped_folds(groups, num_folds, seed)`. `C`, `max_iter`, `tol` mean what they mean for scikit-learn's
    `LogisticRegression` (lbfgs). `control` adds the same probes fitted on labels shuffled with `seed`; `null_labels`
    `[permutations, n]`, label sets of a permutation test, each fitted on the same folds (`null_accuracy`).
    """
    if not (C > 0 and np.isfinite(C)) or max_iter < 1 or not tol > 0:  # as the CLI refuses them
        raise ValueError(f"C must be a positive finite number, max_iter >= 1 and tol > 0; got C={C}, max_iter={max_iter}, "
                         f"tol={tol}")
    features, labels = np.asarray(features), np.asarray(labels)
    classes = _check(features, labels, groups)
    count = labels.shape[0]
    folds = grouped_folds(np.arange(count) if groups is None else np.asarray(groups), num_folds, seed)
    _check_training_classes(folds, labels)
    null_labels = np.zeros((0, count), labels.dtype) if null_labels is None else np.asarray(null_labels)
    if null_labels.ndim != 2 or null_labels.shape[1] != count or not np.isin(null_labels, classes).all():
        raise ValueError(f"null_labels must be [permutations, n] = [*, {count}] of the labels' {len(classes)} classes "
                         f"{classes.tolist()}, got shape {null_labels.shape}")
    label_sets = [labels]
    if control:
        label_sets.append(labels[np.random.default_rng(seed).permutation(count)])
    label_sets += list(null_labels)
    # The solver's classes are 0..K-1: each label's index among the distinct labels.
    problem_labels = np.searchsorted(classes, np.repeat(np.stack(label_sets), num_folds, axis=0))
    problem_folds = np.tile(np.arange(num_folds), len(label_sets))
    fold_train = folds[None, :] != np.arange(num_folds)[:, None]  # [folds, n]
    width = features.shape[2]
    layers_per_step = int(np.clip(CACHE_BYTES // (4 * count * width), 1, features.shape[1]))
    solve = _solver(len(classes), max_iter, LBFGS_MEMORY, layers_per_step)
    correct, iterations, converged = jax.device_get(solve(
        jnp.asarray(features, jnp.float32), jnp.asarray(problem_labels, jnp.int32), jnp.asarray(fold_train),
        jnp.asarray(problem_folds, jnp.int32), jnp.float32(C), jnp.float32(tol)))
    test = ~fold_train[problem_folds]  # [problems, n]
    fold_accuracy = correct.sum(-1) / test.sum(-1)  # [layers, problems]
    pooled = correct.sum(-1)  # held-out correct per (layer, problem); folds partition the samples
    per_set = pooled.reshape(pooled.shape[0], len(label_sets), num_folds).sum(-1) / count  # [layers, label sets]
    return ProbeResult(
        accuracy=per_set[:, 0],
        fold_accuracy=fold_accuracy[:, :num_folds],
        control_accuracy=per_set[:, 1] if control else None,
        control_fold_accuracy=fold_accuracy[:, num_folds:2 * num_folds] if control else None,
        null_accuracy=per_set[:, 1 + control:].T,
        folds=folds,
        classes=classes,
        class_counts=np.sum(labels[:, None] == classes[None, :], axis=0),
        iterations=iterations,
        converged=converged,
    )


# -- the batched solver ----------------------------------------------------------------------------------------------
# Shapes: L layers, P problems (fold x {real, control, null}), F folds, n samples, d width, K outputs (1 for two
# classes, else the number of classes). Parameters per problem: W [K, d] (on standardized features) and b [K]. A
# problem trains on the rows of its fold's training set, `fold_train[problem_fold]`.


def _loss_gradient(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample gradient of the log loss w.r.t. the logits `[..., n, P, K]` (labels `[n, P]`): p - one_hot(y)."""
    if logits.shape[-1] == 1:  # two classes: sigmoid of one logit
        return (jax.nn.sigmoid(logits[..., 0]) - labels.astype(logits.dtype))[..., None]
    return jax.nn.softmax(logits, -1) - jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)


def _loss_change(logits: jax.Array, delta: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-sample change of the log loss when the logits move by `delta`, computed as a difference-free expression
    (`log1p(sum_k p_k expm1(delta_k)) - delta_label`) where the move is small: near the optimum a step changes the
    loss by less than float32 resolves in the loss itself, and a line search comparing two rounded losses stalls."""
    if logits.shape[-1] == 1:
        z, d, y = logits[..., 0], delta[..., 0], labels.astype(logits.dtype)
        small = jnp.log1p(jax.nn.sigmoid(z) * jnp.expm1(jnp.minimum(d, 1.0)))
        large = jax.nn.softplus(z + d) - jax.nn.softplus(z)
        return jnp.where(jnp.abs(d) < 1, small, large) - y * d
    chosen = jnp.sum(delta * jax.nn.one_hot(labels, delta.shape[-1], dtype=delta.dtype), -1)
    probs = jax.nn.softmax(logits, -1)
    small = jnp.log1p(jnp.sum(probs * jnp.expm1(jnp.minimum(delta, 1.0)), -1))
    large = jax.nn.logsumexp(logits + delta, -1) - jax.nn.logsumexp(logits, -1)
    return jnp.where(jnp.max(jnp.abs(delta), -1) < 1, small, large) - chosen


def _predict(logits: jax.Array) -> jax.Array:
    return (logits[..., 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else jnp.argmax(logits, -1).astype(jnp.int32)


def _pair_dot(a: tuple[jax.Array, jax.Array], b: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Per-problem inner product `[L, P]` of (W, b) parameter pairs."""
    return jnp.sum(a[0] * b[0], axis=(-2, -1)) + jnp.sum(a[1] * b[1], axis=-1)


def _solve(features, labels, fold_train, problem_fold, C, tol, *, num_classes: int, max_iter: int, memory: int,
           layers_per_step: int):
    """Returns (held-out correct bool `[L, P, n]`, iterations `[L, P]`, converged `[L, P]`).

    The layers are solved `layers_per_step` at a time (vmapped within a step, `lax.map` over steps): a step's features
    then stay in the CPU's cache across all its iterations instead of streaming every layer from memory twice per
    iteration, and a step stops as soon as its own problems converge.
    """
    count, layers, width = features.shape
    steps = -(-layers // layers_per_step)
    stacked = jnp.swapaxes(features, 0, 1)  # [L, n, d]
    # Each column shifted by its mean over all rows. A probe's predictions are invariant to a constant shift of a column
    # (standardization subtracts the training rows' mean), so this changes no fit and leaks no held-out row; without it a
    # column's large common offset (a residual stream's massive dimensions) would cancel in every float32 logit and
    # gradient, where the standardized weights multiply raw features.
    stacked = stacked - jnp.mean(stacked, axis=1, keepdims=True)
    stacked = jnp.pad(stacked, ((0, steps * layers_per_step - layers), (0, 0), (0, 0)))
    chunks = stacked.reshape(steps, layers_per_step, count, width)
    solve = functools.partial(_solve_layers, labels=labels, fold_train=fold_train, problem_fold=problem_fold, C=C,
                              tol=tol, num_classes=num_classes, max_iter=max_iter, memory=memory)
    correct, iterations, converged = jax.lax.map(solve, chunks)
    unstack = lambda x: x.reshape(steps * layers_per_step, *x.shape[2:])[:layers]
    return unstack(correct), unstack(iterations), unstack(converged)


def _standardizer(x: jax.Array, fold_train: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and inverse std `[F, d]` of features `x` `[n, d]` over each fold's training rows `fold_train` `[F, n]`.

    Two passes (the mean, then the mean squared deviation from it, less the squared mean of the deviations, which
    corrects the mean's own rounding): a one-pass E[x^2] - mean^2 loses every digit of a dimension whose constant
    offset is ~1000x its spread in float32 (a residual stream's massive dimensions), leaving it unscaled or negative.
    Per fold, not per problem: the real, control and null problems of a fold share its training rows; one fold at a
    time (`lax.map`), so the deviations take one `[n, d]` array, not `[F, n, d]`."""
    weight = fold_train.astype(x.dtype)
    n_train = weight.sum(-1)[:, None]  # [F, 1]
    mean = weight @ x / n_train

    def deviation_sums(fold):  # (fold's row weights [n], its mean [d]) -> sums of deviations and their squares [d]
        rows, centre = fold
        deviation = x - centre
        return rows @ deviation, rows @ (deviation * deviation)

    deviations, squares = jax.lax.map(deviation_sums, (weight, mean))
    correction = deviations / n_train
    variance = jnp.maximum(squares / n_train - correction**2, 0.0)
    mean = mean + correction
    std = jnp.sqrt(variance)
    return mean, jnp.where(std > 1e-12 * (1 + jnp.abs(mean)), 1.0 / jnp.maximum(std, 1e-30), 1.0)


def _solve_layers(features, *, labels, fold_train, problem_fold, C, tol, num_classes: int, max_iter: int, memory: int):
    """`_solve` for one step's layers, features `[L, n, d]`.

    Layout: every problem's weights sit side by side, W `[L, P * K, d]`, so each pass over a layer's features is one
    matmul, `[n, d] x [d, P K]` (logits) or `[P K, n] x [n, d]` (gradient), instead of P matrix-vector products
    each streaming the features again; logits and residuals are `[L, n, P, K]`, samples before problems.
    """
    layers, count, width = features.shape
    problems = labels.shape[0]
    outputs = 1 if num_classes == 2 else num_classes
    labels_t = labels.T  # [n, P]
    train = fold_train[problem_fold]  # [P, n]
    weight = train.astype(jnp.float32)
    n_train = weight.sum(-1)  # [P]
    sample_weight = weight.T / n_train  # [n, P]: each training row's share of its problem's mean loss
    penalty = 1.0 / (C * n_train)  # [P]: scikit-learn's l2 strength on the mean loss

    mean, inv_std = jax.lax.map(lambda x: _standardizer(x, fold_train), features)  # [L, F, d] each
    mean, inv_std = mean[:, problem_fold, None, :], inv_std[:, problem_fold, None, :]  # [L, P, 1, d]: over outputs

    def logits_of(params):  # linear in (W, b); W [L, P, K, d] -> logits [L, n, P, K]
        w, b = params
        scaled = w * inv_std  # the weights on the raw features
        offset = b - jnp.sum(mean * scaled, -1)  # [L, P, K]
        raw = jnp.einsum("lnd,lqd->lnq", features, scaled.reshape(layers, problems * outputs, width))
        return raw.reshape(layers, count, problems, outputs) + offset[:, None]

    def gradient(dlogits, params):
        residual = dlogits * sample_weight[..., None]  # [L, n, P, K]
        total = residual.sum(1)  # [L, P, K]
        raw = jnp.einsum("lnq,lnd->lqd", residual.reshape(layers, count, problems * outputs), features)
        grad_w = (raw.reshape(params[0].shape) - mean * total[..., None]) * inv_std + penalty[:, None, None] * params[0]
        return grad_w, total

    def max_abs(grad):
        return jnp.maximum(jnp.max(jnp.abs(grad[0]), (-2, -1)), jnp.max(jnp.abs(grad[1]), -1))

    params = (jnp.zeros((layers, problems, outputs, width)), jnp.zeros((layers, problems, outputs)))
    logits = logits_of(params)
    grad = gradient(_loss_gradient(logits, labels_t), params)
    history = jax.tree.map(lambda x: jnp.zeros((memory, *x.shape)), {"s": params, "y": params})
    rho = jnp.zeros((memory, layers, problems))
    state = {
        "params": params, "logits": logits, "grad": grad, "history": history, "rho": rho,
        "count": jnp.int32(0), "iteration": jnp.zeros((layers, problems), jnp.int32),
        "active": max_abs(grad) > tol,
    }

    def direction(state):
        """L-BFGS two-loop recursion per problem (history slots with rho == 0 contribute nothing)."""
        history, rho = state["history"], state["rho"]
        slot_of = lambda j: (state["count"] - 1 - j) % memory  # j = 0 is the newest pair
        pair = lambda name, slot: jax.tree.map(lambda h: h[slot], history[name])

        def newest_first(j, carry):
            q, alphas = carry
            slot = slot_of(j)
            alpha = rho[slot] * _pair_dot(pair("s", slot), q)
            q = jax.tree.map(lambda qi, yi: qi - _expand(alpha, yi) * yi, q, pair("y", slot))
            return q, alphas.at[j].set(alpha)

        q, alphas = jax.lax.fori_loop(0, memory, newest_first, (jax.tree.map(jnp.negative, state["grad"]), jnp.zeros_like(rho)))
        s_new, y_new = pair("s", slot_of(0)), pair("y", slot_of(0))
        yy = _pair_dot(y_new, y_new)
        gamma = jnp.where((rho[slot_of(0)] > 0) & (yy > 0), _pair_dot(s_new, y_new) / jnp.maximum(yy, 1e-30), 1.0)

        def oldest_first(i, r):
            j = memory - 1 - i
            slot = slot_of(j)
            beta = rho[slot] * _pair_dot(pair("y", slot), r)
            return jax.tree.map(lambda ri, si: ri + _expand(alphas[j] - beta, si) * si, r, pair("s", slot))

        r = jax.lax.fori_loop(0, memory, oldest_first, jax.tree.map(lambda qi: _expand(gamma, qi) * qi, q))
        descent = _pair_dot(r, state["grad"]) < 0
        return jax.tree.map(lambda ri, gi: jnp.where(_expand(descent, ri), ri, -gi), r, state["grad"])

    def step(state):
        params, logits, grad = state["params"], state["logits"], state["grad"]
        move = direction(state)
        move_logits = logits_of(move)  # logits are linear in (W, b): these are the logits' direction
        slope = _pair_dot(grad, move)  # [L, P], negative
        w_m, m_m = (jnp.sum(a * b, (-2, -1)) for a, b in ((params[0], move[0]), (move[0], move[0])))

        steps = jnp.asarray(_STEP_CANDIDATES, jnp.float32)
        t = steps[:, None, None]  # [J, 1, 1] against [L, P]
        changes = _loss_change(logits, steps[:, None, None, None, None] * move_logits, labels_t)  # [J, L, n, P]
        decrease = jnp.einsum("jlnp,np->jlp", changes, sample_weight) + 0.5 * penalty * (2 * t * w_m + t * t * m_m)
        accepted = decrease <= _ARMIJO * t * slope  # [J, L, P]
        chosen = jnp.where(jnp.any(accepted, 0), steps[jnp.argmax(accepted, 0)], 0.0) * state["active"]
        new_params = jax.tree.map(lambda p, m: p + _expand(chosen, m) * m, params, move)
        new_logits = logits + chosen[:, None, :, None] * move_logits
        new_grad = gradient(_loss_gradient(new_logits, labels_t), new_params)
        s = jax.tree.map(lambda a, b: a - b, new_params, params)
        y = jax.tree.map(lambda a, b: a - b, new_grad, grad)
        sy = _pair_dot(s, y)
        keep = (chosen > 0) & (sy > 1e-10 * _pair_dot(y, y))
        slot = state["count"] % memory
        history = {
            "s": jax.tree.map(lambda h, v: h.at[slot].set(jnp.where(_expand(keep, v), v, 0.0)), state["history"]["s"], s),
            "y": jax.tree.map(lambda h, v: h.at[slot].set(jnp.where(_expand(keep, v), v, 0.0)), state["history"]["y"], y),
        }
        rho = state["rho"].at[slot].set(jnp.where(keep, 1.0 / jnp.where(keep, sy, 1.0), 0.0))
        active = state["active"] & (chosen > 0) & (max_abs(new_grad) > tol)
        return {
            "params": new_params, "logits": new_logits, "grad": new_grad, "history": history,
            "rho": rho, "count": state["count"] + 1, "iteration": state["iteration"] + state["active"], "active": active,
        }

    final = jax.lax.while_loop(lambda s: (s["count"] < max_iter) & jnp.any(s["active"]), step, state)
    predicted = _predict(logits_of(final["params"]))  # fresh logits, no accumulated update error: [L, n, P]
    correct = jnp.swapaxes((predicted == labels_t) & ~train.T, 1, 2)  # [L, P, n]
    converged = max_abs(final["grad"]) <= tol
    return correct, final["iteration"], converged


def _expand(per_problem: jax.Array, like: jax.Array) -> jax.Array:
    """`[L, P]` -> broadcastable against a `[L, P, ...]` parameter array."""
    return per_problem.reshape(per_problem.shape + (1,) * (like.ndim - per_problem.ndim))


@functools.cache
def _solver(num_classes: int, max_iter: int, memory: int, layers_per_step: int):
    return jax.jit(functools.partial(_solve, num_classes=num_classes, max_iter=max_iter, memory=memory,
                                     layers_per_step=layers_per_step))
