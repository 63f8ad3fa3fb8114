"""Input checking shared by the public functions.

Every public function goes through these helpers before any kernel runs, so
that kernels can trust their inputs: floating arrays in native byte order with
contiguous, aligned rows. Errors name the offending argument.

16-bit input (float16, and bfloat16 as ``ml_dtypes.bfloat16`` arrays or
``torch.bfloat16`` tensors) reaches the kernels as it is, viewed as uint16
with a code saying which of the two it is (``kernel_array``); the kernels
compute in float32. ml_dtypes is imported only when a torch bfloat16 tensor
needs its dtype.
"""

import math
import operator

import numpy as np

REDUCTIONS = ("none", "mean", "sum")

# What a uint16 array handed to a kernel holds (HALF_* in cecore/_rowmath.pxd).
HALF_NONE, HALF_BF16, HALF_F16 = 0, 1, 2
_FLOAT16, _FLOAT32, _FLOAT64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)


def is_bfloat16(dtype):
    """True for ``ml_dtypes.bfloat16`` (told by its type, without importing ml_dtypes)."""
    kind = dtype.type
    return (dtype.itemsize == 2 and kind.__name__ == "bfloat16"
            and kind.__module__.split(".")[0] == "ml_dtypes")


def is_half(dtype):
    """True for the 16-bit floating types the kernels read natively."""
    return dtype == _FLOAT16 or is_bfloat16(dtype)


def compute_dtype(dtype):
    """The dtype kernels compute in and reductions are returned in: float64 for
    float64, float32 for float32 and the 16-bit types."""
    return _FLOAT64 if dtype == _FLOAT64 else _FLOAT32


def kernel_array(arr):
    """``(array, half)`` as the kernels take them: 16-bit arrays as a uint16 view
    (no copy) with their HALF_* code, others as they are with HALF_NONE."""
    if arr.dtype == _FLOAT16:
        return arr.view(np.uint16), HALF_F16
    if is_bfloat16(arr.dtype):
        return arr.view(np.uint16), HALF_BF16
    return arr, HALF_NONE


def _from_torch(tensor, name):
    """A CPU tensor's data as a NumPy array without a copy (bfloat16 included)."""
    if tensor.device.type != "cpu":
        raise ValueError(
            f"{name} is on device '{tensor.device}', but cecore computes on the CPU only"
        )
    tensor = tensor.detach().resolve_conj().resolve_neg()
    if str(tensor.dtype) == "torch.bfloat16":
        import ml_dtypes
        import torch

        # tensor.numpy() refuses bfloat16; its bits, viewed as int16, are the same bytes
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    try:
        return tensor.numpy()
    except TypeError as error:
        raise TypeError(f"{name} has unsupported dtype {tensor.dtype} ({error})") from None


def asarray(x, name):
    """``np.asarray(x)``, with NumPy's error for ragged nested sequences naming ``name``.

    A PyTorch CPU tensor (also one that requires grad, or of dtype bfloat16)
    is read without a copy; one on another device raises ValueError.
    """
    if type(x).__module__.split(".")[0] == "torch" and hasattr(x, "device"):
        return _from_torch(x, name)
    try:
        return np.asarray(x)
    except ValueError as error:
        raise ValueError(f"{name} must be a rectangular array ({error})") from None


def check_real(arr, name, kinds="fiu"):
    """Raise TypeError unless ``arr``'s dtype kind is one of ``kinds`` (real numbers);
    bfloat16 counts as a floating kind."""
    if "f" in kinds and is_bfloat16(arr.dtype):
        return
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.dtype.kind not in kinds:
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")


def as_float_array(x, name):
    """``x`` as a native-endian float32/float64 array (16-bit floats and integers are
    promoted: for inputs the kernels do not read natively, such as targets).

    Returns ``(array, result_dtype)`` where ``result_dtype`` is the dtype results
    are reported in: float64 for float64 (and integer) input, float32 otherwise.
    """
    arr = asarray(x, name)
    check_real(arr, name)
    if is_bfloat16(arr.dtype):
        return arr.astype(np.float32), _FLOAT32
    kind = arr.dtype.kind
    if kind in "iu":
        arr = arr.astype(np.float64)
    elif arr.dtype.itemsize < 4:
        arr = arr.astype(np.float32)
    elif arr.dtype.itemsize > 8:
        raise TypeError(f"{name} has unsupported dtype {arr.dtype} (use float32 or float64)")
    elif not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, arr.dtype


def as_logits_array(x, name):
    """As :func:`as_float_array`, but float16 and bfloat16 stay as they are (in
    native byte order): the kernels read them natively."""
    arr = asarray(x, name)
    if is_bfloat16(arr.dtype):
        return arr, _FLOAT32
    if arr.dtype.kind == "f" and arr.dtype.itemsize == 2:
        return (arr if arr.dtype.isnative else arr.astype(_FLOAT16)), _FLOAT32
    return as_float_array(arr, name)


def check_axis(axis, ndim, name):
    """Normalise ``axis`` for an array of ``ndim`` dimensions called ``name``."""
    axis = check_int(axis, "axis")
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis)")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for {name} with {ndim} dimension(s)")
    return axis % ndim


def check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_fraction(value, name):
    """A float in [0, 1]."""
    value = check_real_number(value, name, "a float in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_real_number(value, name, what):
    """``value`` as a Python float; TypeError (saying ``what`` was expected) for
    anything but a real number: strings and bools are not numbers here."""
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {value!r}") from None


def check_bool(value, name):
    """``value`` as a bool; TypeError for anything else (a truthy array or string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def check_int(value, name):
    """An integer that fits in 64 bits (what the kernels take)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"{name} must fit in a 64-bit signed integer, got {value}")
    return value


def aligned(arr):
    """``arr``, copied if its buffer is misaligned for its dtype (C kernels need alignment)."""
    return arr if arr.flags.aligned else arr.copy()


def as_rows(arr, axis):
    """View (or copy) ``arr`` as a 2-D array (rows, classes) with ``axis`` last.

    Rows come out in C order of the remaining axes; each row is contiguous and
    aligned (the kernels' only layout requirement), the row stride is free.
    """
    if axis != arr.ndim - 1:
        arr = np.moveaxis(arr, axis, -1)
    k = arr.shape[-1]
    if arr.ndim == 2:
        rows = arr
    elif k > 0:
        rows = arr.reshape(-1, k)
    else:
        rows = arr.reshape(math.prod(arr.shape[:-1]), 0)
    itemsize = rows.dtype.itemsize
    if (
        not rows.flags.aligned
        or (k > 1 and rows.strides[1] != itemsize)
        or rows.strides[0] % itemsize != 0
    ):
        # ascontiguousarray alone keeps a contiguous but misaligned buffer
        rows = aligned(np.ascontiguousarray(rows))
    return rows


# Fewer contiguous positions per class than this leave most of the column
# kernels' lanes idle: such layouts take as_rows (a transposed copy) instead.
MIN_COLUMN_POSITIONS = 8


def as_columns(arr, axis):
    """``arr`` as a 3-D view ``(outer, classes, inner)`` for the column kernels, or None.

    For a class axis that is not last: the axes before it flattened into
    ``outer``, those after it into ``inner``, which must be contiguous (stride
    one element) and hold at least MIN_COLUMN_POSITIONS positions; the class
    and outer strides are free. The kernels read this view in place, where
    :func:`as_rows` would make a transposed copy. None when no such view exists
    (the caller then takes as_rows).
    """
    if axis == arr.ndim - 1 or not arr.flags.aligned:
        return None
    k = arr.shape[axis]
    inner = math.prod(arr.shape[axis + 1:])
    if k == 0 or inner < MIN_COLUMN_POSITIONS:
        return None
    try:
        cols = arr.reshape(math.prod(arr.shape[:axis]), k, inner, copy=False)
    except ValueError:
        return None
    itemsize = arr.itemsize
    if (cols.strides[2] != itemsize or cols.strides[1] % itemsize
            or cols.strides[0] % itemsize):
        return None
    return cols


def rows_of(layout, axis):
    """The 2-D rows of a layout from :func:`logits_rows`: rows as they are, a 3-D
    columns view through :func:`as_rows` (a transposed copy), for the callers whose
    option has no column kernel."""
    return layout if layout.ndim == 2 else as_rows(layout, 1)


def layout_shape(layout):
    """``(positions, classes)`` of a layout from :func:`logits_rows` (rows or columns)."""
    if layout.ndim == 3:
        return layout.shape[0] * layout.shape[2], layout.shape[1]
    return layout.shape


_NO_WEIGHT = np.empty(0)
_NO_WEIGHT.flags.writeable = False


def class_weight(weight, n_classes, name="weight"):
    """Class weights as a contiguous float64 array of length ``n_classes`` (empty if None)."""
    if weight is None:
        return _NO_WEIGHT
    w = asarray(weight, name)
    check_real(w, name, "fiub")
    if w.shape != (n_classes,):
        raise ValueError(
            f"{name} must have shape ({n_classes},) (one weight per class), got {w.shape}"
        )
    return aligned(np.ascontiguousarray(w, dtype=np.float64))


def class_targets(target, expected_shape, n_classes, ignore_index):
    """Integer class targets as a flat int32/int64 array matching the logits' rows."""
    t = target
    if t.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}")
    if (t.dtype == np.int64 and t.ndim == 1 and t.shape == expected_shape
            and t.flags.c_contiguous and t.flags.aligned):
        return t
    if t.shape != expected_shape:
        raise ValueError(
            f"target has shape {t.shape}, expected {expected_shape} "
            "(the logits' shape without the class axis)"
        )
    if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
        bad = int(np.argmax(t > np.iinfo(np.int64).max))
        raise_bad_target(t, bad, n_classes, ignore_index)
    if t.dtype not in (np.int32, np.int64) or not t.dtype.isnative:
        t = t.astype(np.int64)
    return aligned(np.ascontiguousarray(t.reshape(-1)))


def raise_bad_target(target, flat_index, n_classes, ignore_index, first_row=0):
    """Raise ValueError naming ``target.flat[flat_index]`` by its index; when ``target``
    is a block of rows of a larger array, ``first_row`` is the block's first row."""
    index = np.unravel_index(flat_index, target.shape) if target.ndim else ()
    value = target[index]
    shown = (index[0] + first_row, *index[1:]) if index else ()
    where = "target[" + ", ".join(str(int(i)) for i in shown) + "]" if index else "target"
    raise ValueError(
        f"{where} = {value} is out of range: class indices must be in [0, {n_classes}) "
        f"or equal ignore_index ({ignore_index})"
    )


def divide(numerator, denominator):
    """numerator / denominator with IEEE semantics (0/0 = nan, x/0 = +-inf), no warning."""
    if denominator:
        return numerator / denominator
    if numerator == 0 or math.isnan(numerator):
        return math.nan
    return math.copysign(math.inf, numerator) * math.copysign(1.0, denominator)


# Doubles at or above this magnitude round to inf in float32 (FLT_MAX + half an ulp).
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103


def as_result(value, dtype):
    """The Python float ``value`` as a NumPy scalar of ``dtype`` (float32 or float64).

    A value beyond float32's range becomes +-inf, as in the kernels, without
    NumPy's "overflow encountered in cast" RuntimeWarning.
    """
    if dtype.itemsize == 4 and abs(value) >= _FLOAT32_OVERFLOW:
        value = math.copysign(math.inf, value)
    return dtype.type(value)


def cast(arr, dtype):
    """``arr`` as ``dtype`` (no copy if it already is); values out of range become
    +-inf without a RuntimeWarning (IEEE semantics, as everywhere in cecore)."""
    if arr.dtype == dtype:
        return arr
    with np.errstate(over="ignore"):
        return arr.astype(dtype)


def trailing_broadcast(value, shape, name, dtype):
    """``value`` broadcast over the trailing axes of ``shape`` it spans.

    Returns a contiguous 1-D array of ``dtype`` whose length C divides the size
    of ``shape``: element i of a flattened array of ``shape`` pairs with element
    ``i % C``. Raises ValueError if ``value`` does not broadcast to ``shape``.
    """
    v = asarray(value, name)
    check_real(v, name, "fiub")
    try:
        if np.broadcast_shapes(v.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"{name} with shape {v.shape} does not broadcast to the input's shape {shape}"
        ) from None
    trailing = tuple(shape[len(shape) - v.ndim:]) if v.ndim else ()
    return aligned(np.ascontiguousarray(cast(np.broadcast_to(v, trailing), dtype))).reshape(-1)


_FAST_DTYPES = (_FLOAT32, _FLOAT64, _FLOAT16)


def logits_rows(x, axis, name, columns=False):
    """Coerce ``x`` and lay it out as rows along ``axis``.

    Returns ``(rows, batch_shape, axis, in_dtype)``: the 2-D rows (float32,
    float64, or float16/bfloat16 as given), the shape of ``x`` without ``axis``,
    the normalised axis, and the dtype of ``x`` as given when floating (the
    dtype of elementwise results). With ``columns``, a class axis that is not
    last comes back as the 3-D view of :func:`as_columns` where one exists,
    in place of rows (see :func:`rows_of`, :func:`layout_shape`).
    """
    # fast path for the common case: a 2-D float32/64 array with rows contiguous
    if (
        type(x) is np.ndarray
        and x.ndim == 2
        and type(axis) is int
        and (axis == -1 or axis == 1)
        and x.dtype in _FAST_DTYPES
        and x.shape[1] > 0
        and x.strides[1] == x.itemsize
        and x.strides[0] % x.itemsize == 0
        and x.flags.aligned
    ):
        return x, (x.shape[0],), 1, x.dtype
    arr, _ = as_logits_array(x, name)
    axis = check_axis(axis, arr.ndim, name)
    if arr.shape[axis] == 0:
        raise ValueError(f"{name} has zero classes along axis {axis}")
    batch_shape = arr.shape[:axis] + arr.shape[axis + 1:]
    if columns and math.prod(arr.shape[axis + 1:]) >= MIN_COLUMN_POSITIONS:
        # a layout without such a view is compacted in its own axis order (not
        # transposed): which kernel runs, and so every bit of the result, depends
        # on the shape alone, never on the memory layout
        cols = as_columns(arr, axis)
        if cols is None:
            cols = as_columns(aligned(np.ascontiguousarray(arr)), axis)
        if cols is not None:
            return cols, batch_shape, axis, arr.dtype
    return as_rows(arr, axis), batch_shape, axis, arr.dtype
