"""Drop-in for ``sklearn.metrics.log_loss`` (scikit-learn 1.9 semantics).

Does not import scikit-learn. Examples
--------
>>> from cecore.sklearn import log_loss
>>> round(log_loss(["spam", "ham", "ham", "spam"],
...                [[.1, .9], [.9, .1], [.8, .2], [.35, .65]]), 6)
0.216162
"""

import math
import warnings

import numpy as np

from cecore._divergence import cross_entropy_pq

__all__ = ["InvalidParameterError", "log_loss"]


class InvalidParameterError(ValueError, TypeError):
    """A parameter of the wrong type or value (as scikit-learn's exception of this name)."""


def _finite_float(x, name, min_samples=1):
    arr = np.asarray(x)
    if arr.dtype.kind == "c":
        raise InvalidParameterError(f"{name} is complex: complex data is not supported")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}") from None
    if arr.dtype not in (np.float64, np.float32, np.float16):
        arr = arr.astype(np.float64)
    if arr.ndim == 0:
        raise ValueError(f"{name} must be an array of samples, got a scalar: {x!r}")
    if arr.ndim > 2:
        raise ValueError(f"Found array with dim {arr.ndim}, while dim <= 2 is required "
                         f"({name} must be (n_samples,) or (n_samples, n_classes))")
    if arr.shape[0] < min_samples:
        raise ValueError(f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum "
                         f"of 1 is required ({name} is empty)")
    if np.isnan(arr).any():
        raise ValueError(f"Input {name} contains NaN.")
    if np.isinf(arr).any():
        raise ValueError(f"Input {name} contains infinity or a value too large for "
                         f"{arr.dtype!r}.")
    return arr


def _classes(y, name):
    """Sorted unique labels of the 1-D ``y`` (scikit-learn's ``unique_labels``)."""
    if y.dtype.kind == "O":
        kinds = {isinstance(v, str) for v in y.tolist()}
        if len(kinds) > 1:
            raise ValueError(f"Mix of label input types (string and number) in {name}; "
                             f"got {y.tolist()!r}")
    if y.dtype.kind == "f" and (np.any(np.isnan(y)) or np.any(y != np.round(y))):
        raise ValueError(f"Unknown label type: {name} holds continuous values "
                         f"({y.tolist()!r}); log_loss needs class labels")
    return np.unique(y)


def log_loss(y_true, y_proba=None, *, normalize=True, sample_weight=None, labels=None,
             y_pred="deprecated"):
    r"""Log loss, the cross-entropy of labels under predicted probabilities (sklearn 1.9).

    ``L = -(1 / sum w) sum_i w_i sum_k y_ik log p_ik`` with ``p`` clipped to
    ``[eps, 1 - eps]`` (``eps`` of ``y_proba``'s dtype), as scikit-learn 1.9
    computes it; ``normalize=False`` returns the weighted sum.

    Parameters
    ----------
    y_true : array_like of shape (n_samples,) or (n_samples, n_classes)
        Labels of any type (numbers, strings, bools; classes are the sorted
        unique labels, as ``LabelBinarizer``), or a 0/1 indicator matrix.
    y_proba : array_like of shape (n_samples, n_classes), (n_samples,) or (n_samples, 1)
        Predicted probabilities, columns in the sorted order of the classes;
        one column (or 1-D) is the probability of the positive class.
    normalize : bool, default True
        Mean (weighted by ``sample_weight``) instead of the sum.
    sample_weight : array_like of shape (n_samples,), optional
    labels : array_like, optional
        All class labels, when ``y_true`` lacks some.
    y_pred : array_like
        Deprecated alias of ``y_proba`` (renamed in scikit-learn 1.9):
        FutureWarning.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        (``InvalidParameterError``, also a TypeError, for parameters of the wrong
        type) wherever scikit-learn raises: probabilities outside [0, 1], NaN or
        inf, mismatched lengths or class counts, a single class, labels missing
        from ``labels``, continuous or mixed-type labels, all-zero weights.
    ZeroDivisionError
        Weights summing to zero (as scikit-learn).

    Warns
    -----
    UserWarning
        Rows of ``y_proba`` not summing to 1 (to ``sqrt(eps)``), and
        ``labels`` not in sorted order, as scikit-learn.
    """
    if not (isinstance(y_pred, str) and y_pred == "deprecated"):
        if y_proba is not None:
            raise ValueError("Cannot use both `y_pred` and `y_proba`. `y_pred` is deprecated, "
                             "use `y_proba` instead.")
        warnings.warn("`y_pred` was renamed to `y_proba` in version 1.9 and will be removed "
                      "in 1.11. Use `y_proba` instead.", FutureWarning, stacklevel=2)
        y_proba = y_pred
    if y_proba is None:
        raise InvalidParameterError("log_loss() needs y_proba (the predicted probabilities)")
    if not isinstance(normalize, (bool, np.bool_)):
        raise InvalidParameterError(f"The 'normalize' parameter of log_loss must be an instance "
                                    f"of 'bool'. Got {normalize!r} instead.")
    for name, value in (("y_true", y_true), ("y_proba", y_proba),
                        ("sample_weight", sample_weight), ("labels", labels)):
        if value is not None and (np.ndim(value) == 0 or isinstance(value, (str, bytes))):
            raise InvalidParameterError(f"The '{name}' parameter of log_loss must be an "
                                        f"array-like. Got {value!r} instead.")
    proba = _finite_float(y_proba, "y_proba")
    if proba.max() > 1:
        raise ValueError(f"y_prob contains values greater than 1: {proba.max()}")
    if proba.min() < 0:
        raise ValueError(f"y_prob contains values lower than 0: {proba.min()}")

    if isinstance(y_true, (list, tuple)) and len({isinstance(v, str) for v in y_true}) > 1:
        raise ValueError(f"Mix of label input types (string and number) in y_true: {y_true!r}")
    y = np.asarray(y_true)
    n = proba.shape[0]
    weights = None if sample_weight is None else np.asarray(sample_weight)
    lengths = [n, y.shape[0] if y.ndim else 1] + ([] if weights is None else [len(weights)])
    if len(set(lengths)) > 1:
        raise ValueError("Found input variables with inconsistent numbers of samples: "
                         f"{lengths} (y_proba, y_true, sample_weight)")
    if weights is not None:
        weights = _finite_float(weights, "sample_weight")
        if weights.ndim != 1:
            raise ValueError(f"Sample weights must be 1D array or scalar, got {weights.ndim}D "
                             f"array. Expected either a scalar value or a 1D array of length {n}.")
        if np.all(weights == 0):
            raise ValueError("Sample weights must contain at least one non-zero number.")

    indicator = y.ndim == 2 and y.shape[1] > 1
    if indicator:
        if labels is not None:
            raise ValueError("labels cannot be combined with a label indicator matrix y_true")
        if y.dtype.kind not in "biuf" or not np.all((y == 0) | (y == 1)):
            raise ValueError("Multioutput target data is not supported with label "
                             "binarization: a 2-D y_true must be a 0/1 indicator matrix")
        onehot = y.astype(proba.dtype)
        n_classes = y.shape[1]
    else:
        if y.ndim != 1:
            raise ValueError(f"y_true must be 1-D labels or a 2-D indicator matrix, got shape "
                             f"{y.shape}")
        if labels is not None:
            lab = np.asarray(labels)
            classes = _classes(lab.reshape(-1), "labels")
            if classes.shape != lab.shape or not np.all(classes == lab):
                warnings.warn(
                    f"Labels passed were {labels}. But this function assumes labels are "
                    f"ordered lexicographically. Pass the ordered labels={classes.tolist()} and "
                    "ensure that the columns of y_prob correspond to this ordering.",
                    UserWarning, stacklevel=2)
            if not np.all(np.isin(y, lab)):
                raise ValueError(f"y_true contains values {set(y.tolist()) - set(lab.tolist())} "
                                 f"not belonging to the passed labels {labels}.")
        else:
            classes = _classes(y, "y_true")
        if classes.shape[0] == 1:
            if labels is None:
                raise ValueError(f"y_true contains only one label ({classes[0]}). Please provide "
                                 "the list of all expected class labels explicitly through the "
                                 "labels argument.")
            raise ValueError(f"The labels array needs to contain at least two labels, got "
                             f"{classes}.")
        index = np.searchsorted(classes, y)
        n_classes = classes.shape[0]
        onehot = None

    if proba.ndim == 1:
        proba = proba[:, np.newaxis]
    if proba.shape[1] == 1:
        proba = np.concatenate([1 - proba, proba], axis=1)
    eps = np.finfo(proba.dtype).eps
    if not np.all(np.isclose(proba.sum(axis=1), 1, rtol=math.sqrt(eps))):
        warnings.warn("The y_prob values do not sum to one. Make sure to pass probabilities.",
                      UserWarning, stacklevel=2)
    if n_classes != proba.shape[1]:
        if labels is None:
            raise ValueError(
                f"y_true and y_prob contain different number of classes: {n_classes} vs "
                f"{proba.shape[1]}. Please provide the true labels explicitly through the "
                f"labels argument. Classes found in y_true: {classes}")
        raise ValueError("The number of classes in labels is different from that in y_prob. "
                         f"Classes found in labels: {classes}")

    if onehot is None:
        # one-hot targets: -sum_k y_k log p_k is -log p[y] (the other terms are 0 log p)
        picked = np.clip(proba[np.arange(n), index], eps, 1 - eps)
        losses = -np.log(picked.astype(np.float64))
    else:
        # indicator rows: the kernel's -sum_k y_k log p_k (0 log p = 0, as xlogy)
        losses = np.asarray(cross_entropy_pq(onehot, np.clip(proba, eps, 1 - eps), axis=-1),
                            np.float64)
    if weights is None:
        return float(losses.mean() if normalize else losses.sum())
    total = float(np.dot(losses, weights.astype(np.float64)))
    if not normalize:
        return total
    scale = float(np.sum(weights, dtype=np.float64))
    if scale == 0:
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")
    return total / scale

