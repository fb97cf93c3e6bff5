"""Fast exact post-processing: the class of each pixel after bilinear upsampling.

`upsample_argmax` returns what transformers' `post_process_semantic_segmentation` returns,
bit for bit, while upsampling a few classes per pixel instead of all of them. Private:
`utils.inference.predict` is the way in.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

_SLOTS = 4  # classes per window and exact pass: 4 groups of 4 make 16 channels, whole SIMD vectors
_MAX_PASSES = 4  # exact passes for unsettled pixels before the plain path finishes them
_PLAIN_UP_TO = 2  # output pixels per grid point up to which the plain path is as fast


def upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class of each pixel after bilinear upsampling of `logits` (classes, h, w) to `size`.

    Returns exactly `F.interpolate(logits[None], size, mode="bilinear").argmax(1)[0]`,
    the post-processing transformers does, but upsamples 16 channels (a pass, usually two
    passes) instead of all 150.

    Why it is exact: torch computes each output pixel from the 2x2 grid points around it
    (its window), so the value lies within their range, give or take float rounding, far
    below `margin`. Per window only the classes whose maximum reaches the best class's
    minimum can win, usually a few. The likeliest 4 of each window are upsampled by torch
    itself, with the float operations of the full tensor (`_exact`), so the values that
    decide are torch's own, bit for bit, and ties go to the lowest class as in argmax. A
    pixel is settled once its best value beats every class left out: by their window
    maxima, or else by a bilinear estimate whose error is proven below `tol`. Classes
    that could still win there are upsampled exactly in further passes (the plain path
    finishes degenerate cases). Short lists are handled in numpy: one thread, no waiting
    for torch's thread pool on a busy machine.
    """
    size = (int(size[0]), int(size[1]))
    grid = _grid(logits, size)
    scale = 0.0
    if grid is not None:
        low, high = torch.aminmax(_storage(logits))
        scale = max(-float(low), float(high))
    if grid is None or not 1e-30 < scale < 1e30:  # not proven here, or NaN, inf, all zero
        return _upsample_all(logits, size).argmax(dim=0)
    (rows, row_weights), (cols, col_weights), boundary = grid
    classes, h, w = logits.shape
    margin = 1e-5 * scale  # rounding moves a bilinear value by under 1e-6 * scale
    window, cls, wmax, first = _contenders(logits, margin, boundary)
    table = _table(h * w, window[first], cls[first])
    bound = np.full(h * w, -np.inf, np.float32)  # the best window maximum left out, + margin
    np.maximum.at(bound, window[~first], wmax[~first] + np.float32(margin))
    pixel_window = rows[:, None] * w + cols
    group = rows[:, None] % 2 * 2 + cols % 2
    upsampled = _exact(logits, table, size, boundary, tail=False).unflatten(0, (4, _SLOTS))
    best, slot = (
        upsampled.permute(2, 3, 0, 1)
        .gather(2, torch.from_numpy(group)[..., None, None].expand(*size, 1, _SLOTS))[:, :, 0]
        .max(2)
    )
    best, slot = best.numpy(), slot.numpy()
    out_values = table.reshape(-1)[pixel_window * _SLOTS + slot]
    out = torch.from_numpy(out_values)  # shares memory with `out_values`
    ys, xs = np.nonzero(best <= bound[pixel_window])
    if ys.size == 0:
        return out
    # Unsettled pixels: estimate the classes left out of their window; those within `tol`
    # of the pixel's best are upsampled exactly, up to `_SLOTS` per window and pass.
    best, at = best[ys, xs].astype(np.float64), pixel_window[ys, xs]
    left, left_cls, left_max = window[~first], cls[~first], wmax[~first]
    left_count = np.bincount(left, minlength=h * w)
    count = left_count[at]
    if count.sum() > 16 * ys.size + 2**20:  # ties everywhere: the plain path is cheaper
        return _finish_plain(out, logits, size, ys, xs)
    pair = np.repeat(np.arange(ys.size), count)
    entry = np.arange(pair.size) + np.repeat(np.cumsum(left_count)[at] - np.cumsum(count), count)
    keep = left_max[entry] >= best[pair] - margin
    pair, pair_cls = pair[keep], left_cls[entry[keep]]
    py, px = ys[pair], xs[pair]
    estimate = _bilinear(logits, pair_cls, rows[py], cols[px], row_weights[py], col_weights[px])
    # A weight off by e moves a bilinear value by at most 2 * scale * e, and torch's own
    # rounding by some 8 float32 ulps of scale (2**-21 * scale): 2**-18 leaves room.
    tol = scale * (2 * (_weight_error(h) + _weight_error(w)) + 2.0**-18)
    passes = 0
    while True:
        threat = estimate >= best[pair] - tol
        pair, pair_cls, estimate = pair[threat], pair_cls[threat], estimate[threat]
        todo = np.unique(pair)
        if todo.size == 0 or passes == _MAX_PASSES:
            return _finish_plain(out, logits, size, ys[todo], xs[todo])
        passes += 1
        vector = pair_cls < boundary
        key = np.unique(at[pair[vector]] * classes + pair_cls[vector])
        table = _table(h * w, key // classes, key % classes)
        tail = not vector.all()
        upsampled = _exact(logits, table, size, boundary, tail)
        ty, tx = ys[todo], xs[todo]
        channel = group[ty, tx, None] * _SLOTS + np.arange(_SLOTS)
        if tail:
            channel = np.concatenate(
                [
                    channel,
                    np.broadcast_to(
                        4 * _SLOTS + np.arange(classes - boundary), (todo.size, classes - boundary)
                    ),
                ],
                1,
            )
        values = upsampled[
            torch.from_numpy(channel), torch.from_numpy(ty[:, None]), torch.from_numpy(tx[:, None])
        ].numpy()
        slot = values.argmax(1)  # the first best: the lowest class, slots before the tail
        value = values[np.arange(todo.size), slot]
        new = np.where(
            slot < _SLOTS, table[at[todo], np.minimum(slot, _SLOTS - 1)], slot - _SLOTS + boundary
        )
        old_value, old = best[todo], out_values[ty, tx]
        better = (value > old_value) | ((value == old_value) & (new < old))
        best[todo] = np.where(better, value, old_value)
        out_values[ty, tx] = np.where(better, new, old)
        done = (table[at[pair]] == pair_cls[:, None]).any(1) | (tail & ~vector)
        pair, pair_cls, estimate = pair[~done], pair_cls[~done], estimate[~done]


def _finish_plain(
    out: torch.Tensor, logits: torch.Tensor, size: tuple[int, int], ys: np.ndarray, xs: np.ndarray
) -> torch.Tensor:
    """`out` with pixels (ys, xs) taken from the plain path."""
    if ys.size:
        ys, xs = torch.from_numpy(ys), torch.from_numpy(xs)
        out[ys, xs] = _upsample_all(logits, size).argmax(dim=0)[ys, xs]
    return out


def _upsample_all(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)[0]


def _storage(tensor: torch.Tensor) -> torch.Tensor:
    """A dense tensor's elements, flat in memory order."""
    return tensor.as_strided((tensor.numel(),), (1,), tensor.storage_offset())


_Axis = tuple[np.ndarray, np.ndarray]  # torch's window and weight per output row or column


def _grid(logits: torch.Tensor, size: tuple[int, int]) -> tuple[_Axis, _Axis, int] | None:
    """torch's window (and weight) for each output row and column, and the first class its
    channels-last kernel leaves to scalar code; None where exactness is not proven: other
    devices, dtypes or layouts, tiny inputs, or float rounding leaving a window unsure; and
    for small outputs, where the plain path is as fast."""
    if logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.dim() != 3:
        return None
    classes, h, w = logits.shape
    channels_last = logits[None].is_contiguous(memory_format=torch.channels_last)
    if classes < 4 or min(h, w) < 2 or min(size) < 1 or channels_last == logits.is_contiguous():
        return None
    if size[0] * size[1] <= _PLAIN_UP_TO * h * w:
        return None
    rows, cols = _source_index(h, size[0]), _source_index(w, size[1])
    if rows is None or cols is None:
        return None
    if not channels_last and sum(size) > 128:  # torch's generic kernel, plane by plane
        return rows, cols, classes
    lanes = _simd_lanes()  # torch's channels-last kernel, also used for small outputs
    if lanes is None or 4 * _SLOTS % lanes or classes < lanes:
        return None
    return rows, cols, classes - classes % lanes


def _source_index(n_in: int, n_out: int) -> _Axis | None:
    """torch's first source index and the (float64) weight of the next one for each output
    index; None where the float rounding of torch's formula leaves the index unsure."""
    if n_in == n_out:  # torch copies
        return np.arange(n_out), np.zeros(n_out)
    scale = np.float32(n_in) / np.float32(n_out)
    dst = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    rounded = np.maximum(scale * dst - np.float32(0.5), 0)  # float32, two roundings
    fused = (np.float64(scale) * dst.astype(np.float64) - 0.5).astype(np.float32)  # one
    index = np.minimum(np.floor(rounded), n_in - 1)
    if not np.array_equal(index, np.minimum(np.floor(np.maximum(fused, 0)), n_in - 1)):
        return None
    return index.astype(np.int64), np.clip(rounded.astype(np.float64) - index, 0, 1)


def _weight_error(n_in: int) -> float:
    """Bound on the gap between torch's weight and ours: 4 float32 ulps of the source index."""
    return 2.0 ** (int(np.ceil(np.log2(max(n_in, 2)))) - 22)


def _contenders(
    logits: torch.Tensor, margin: float, boundary: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The classes that may win in each window, as lists sorted by window: window, class,
    maximum over the window, and whether it is one of the window's `_SLOTS` likeliest
    classes before the SIMD tail (`boundary`), for the first exact pass."""
    classes, h, w = logits.shape
    floor = torch.empty(h, w)  # the best minimum over each window, last row and column repeated
    pairs = torch.minimum(logits[:, :-1], logits[:, 1:])
    floor[:-1, :-1] = torch.minimum(pairs[..., :-1], pairs[..., 1:]).amax(dim=0)
    floor[:-1, -1] = pairs[..., -1].amax(dim=0)
    floor[-1, :-1] = torch.minimum(logits[:, -1, :-1], logits[:, -1, 1:]).amax(dim=0)
    floor[-1, -1] = logits[:, -1, -1].max()
    threshold = floor - margin
    # Grid points reaching the lowest threshold of the windows they are a corner of, then
    # the windows with such a corner: a cheap superset of the contenders, trimmed below.
    lowest = threshold.clone()
    torch.minimum(lowest[1:], threshold[:-1], out=lowest[1:])
    torch.minimum(lowest[:, 1:], lowest[:, :-1].clone(), out=lowest[:, 1:])
    reach = logits >= lowest
    near = torch.empty_like(reach)
    torch.logical_or(reach[:, :-1], reach[:, 1:], out=near[:, :-1])
    near[:, -1] = reach[:, -1]
    torch.logical_or(near[..., :-1], near[..., 1:], out=reach[..., :-1])
    reach[..., -1] = near[..., -1]
    if logits.is_contiguous():
        cls, i, j = reach.nonzero().numpy().T
    else:  # channels-last: list them in memory order, much faster
        i, j, cls = reach.permute(1, 2, 0).nonzero().numpy().T
    corners = _corners(logits, cls, i, j)
    wmax = corners.max(0)
    keep = wmax >= threshold.numpy()[i, j]
    window, cls, wmax = (i * w + j)[keep], cls[keep], wmax[keep]
    tail = cls >= boundary
    likely = wmax + corners[:, keep].mean(0, dtype=np.float64)  # high maximum, high mean
    likely = (likely - likely.min()) / (np.ptp(likely) or 1.0)
    # by window, then classes before the SIMD tail, the likeliest first
    order = np.argsort((window * 2 + tail) * 2 - likely, kind="stable")
    window, cls, wmax, tail = window[order], cls[order], wmax[order], tail[order]
    return window, cls, wmax, (_rank_in_window(window, h * w) < _SLOTS) & ~tail


def _rank_in_window(window: np.ndarray, windows: int) -> np.ndarray:
    """Each entry's position within its window, for entries sorted by `window`."""
    count = np.bincount(window, minlength=windows)
    return np.arange(window.size) - (np.cumsum(count) - count)[window]


def _table(windows: int, window: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """(windows, `_SLOTS`) classes: the first `_SLOTS` of `cls` (sorted by `window`) of each
    window in ascending order; free slots hold class 0, evaluated exactly like the others."""
    rank = _rank_in_window(window, windows)
    keep = rank < _SLOTS
    table = np.zeros((windows, _SLOTS), np.int64)
    table[window[keep], rank[keep]] = cls[keep]
    table.sort(axis=1)
    return table


def _exact(
    logits: torch.Tensor, table: np.ndarray, size: tuple[int, int], boundary: int, tail: bool
) -> torch.Tensor:
    """torch's upsampled values of each window's `table` classes: 4 groups of `_SLOTS`
    channels (group 2 * (row % 2) + column % 2 of the window), then, with `tail`, the
    classes from `boundary` on.

    A grid point is a corner of at most one window per group, so each channel holds one
    class's logits around every window of its group, and torch gives it the float
    operations it gets in the full tensor: plane by plane, or in the channels-last
    kernel in whole SIMD vectors, the scalar tail kept as it is (`_simd_lanes`).
    """
    h, w = logits.shape[1:]
    owner = [
        [np.maximum(np.arange(n) - (np.arange(n) - parity) % 2, 0) for parity in (0, 1)]
        for n in (h, w)
    ]
    slots = table.reshape(h, w, _SLOTS)
    index = np.concatenate(
        [slots[owner[0][a]][:, owner[1][b]] for a in (0, 1) for b in (0, 1)], axis=2
    )
    by_point = logits.permute(1, 2, 0)
    channels = by_point.gather(2, torch.from_numpy(index))
    if tail:
        channels = torch.cat([channels, by_point[..., boundary:]], dim=2)
    channels = channels[None].permute(0, 3, 1, 2)  # channels-last, as SegFormer's logits
    if logits.is_contiguous():
        channels = channels.contiguous()
    return F.interpolate(channels, size=size, mode="bilinear", align_corners=False)[0]


def _corners(logits: torch.Tensor, cls: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(4, n) logits of classes `cls` at the corners of windows (i, j), the last row and
    column repeated as torch does."""
    h, w = logits.shape[1:]
    data, (stride_c, stride_h, stride_w) = _storage(logits.detach()).numpy(), logits.stride()
    base = cls * stride_c
    return np.stack(
        [
            data[base + r * stride_h + c * stride_w]
            for r in (i, np.minimum(i + 1, h - 1))
            for c in (j, np.minimum(j + 1, w - 1))
        ]
    )


def _bilinear(
    logits: torch.Tensor,
    cls: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    row_weight: np.ndarray,
    col_weight: np.ndarray,
) -> np.ndarray:
    """float64 bilinear values of classes `cls` in windows (i, j) at the given weights."""
    c00, c01, c10, c11 = _corners(logits, cls, i, j).astype(np.float64)
    top = c00 + (c01 - c00) * col_weight
    bottom = c10 + (c11 - c10) * col_weight
    return top + (bottom - top) * row_weight


@cache
def _simd_lanes() -> int | None:
    """How many float channels torch's channels-last bilinear kernel handles per vector here.

    Found by experiment rather than assumed from the CPU's name: the first lane count for
    which channels moved within the vector part, or kept in the scalar tail, reproduce a
    full interpolation bit for bit, as `_exact` needs.
    """
    channels = 45  # splits differently for 16, 8 and 4 lanes: 32|13, 40|5, 44|1
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, channels, 9, 11, generator=generator)
    probe = probe.contiguous(memory_format=torch.channels_last)
    full = F.interpolate(probe, size=(29, 31), mode="bilinear", align_corners=False)[0]
    picks = [torch.tensor(p) for p in ([0, 31], [32, 35, 39], [40, 44], [1, 2, 33, 41, 43])]
    for lanes in (16, 8, 4):
        if all(_layout_matches(probe[0], full, p, lanes) for p in picks):
            return lanes
    return None


def _layout_matches(
    logits: torch.Tensor, full: torch.Tensor, picks: torch.Tensor, lanes: int
) -> bool:
    boundary = logits.shape[0] - logits.shape[0] % lanes
    vector, tail = picks[picks < boundary], picks[picks >= boundary]
    if vector.numel() % lanes:
        vector = torch.cat([vector, vector[:1].expand(lanes - vector.numel() % lanes)])
    order = torch.cat([vector, tail])
    subset = logits[order][None].contiguous(memory_format=torch.channels_last)
    upsampled = F.interpolate(subset, size=full.shape[1:], mode="bilinear", align_corners=False)[0]
    return all(torch.equal(upsampled[i], full[c]) for i, c in enumerate(order.tolist()))
