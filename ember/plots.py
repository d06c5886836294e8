"""Figures of a job as PNG bytes: spike rasters, weight images, delay histograms, accuracy.

Every function builds a ``matplotlib.figure.Figure`` with the Agg canvas and
returns PNG bytes, so no GUI backend and no global pyplot state is involved.
Plots can be drawn in worker threads and processes without a display.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ember.results import SpikeChunk

_DPI = 100


def _to_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _numpy(values: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).numpy()
    return np.asarray(values, dtype=np.float64)


def spike_raster(
    chunk: SpikeChunk,
    *,
    title: str = "spikes",
    max_points: int = 200_000,
    sample_ms: float | None = None,
    group_labels: Sequence[str] | None = None,
) -> bytes:
    """Draw a raster of spike times (ms) against flat neuron index.

    Args:
        chunk: the spike records; with samples, the records of different
            samples are drawn in alternating colours.
        title: the figure title.
        max_points: at most this many records are drawn (the first ones),
            to keep the figure responsive; the title states when records were left out.
        sample_ms: the length of one sample in ms, for samples laid end to
            end; a dotted line then marks where each sample starts.
        group_labels: one label per slice of the first dimension of
            ``chunk.shape`` (the maps of a convolution), drawn at the left
            with a line between groups; ``None`` for no groups.

    Raises:
        ValueError: if ``group_labels`` does not have one label per slice.

    Returns:
        PNG bytes.
    """
    figure = Figure(figsize=(8, 4))
    axes = figure.add_subplot()
    count = len(chunk)
    shown = min(count, max_points)
    times = chunk.times_ms()[:shown]
    index = chunk.index[:shown]
    colour = "black" if chunk.sample is None else np.where(chunk.sample[:shown] % 2 == 0, "black", "tab:blue")
    axes.scatter(times, index, s=2, c=colour, marker="|", linewidths=0.8)
    axes.set_xlabel("time (ms)")
    axes.set_ylabel("neuron index")
    size = math.prod(chunk.shape)
    axes.set_ylim(-0.5, size - 0.5)
    if sample_ms is not None and shown:
        for start in np.arange(sample_ms, float(times.max()) + sample_ms / 2, sample_ms):
            axes.axvline(start, color="0.6", linestyle=":", linewidth=0.8)
    if group_labels is not None:
        if len(group_labels) != chunk.shape[0]:
            raise ValueError(f"group_labels must have one label per slice of the first dimension ({chunk.shape[0]}), got {len(group_labels)}")
        group = size // chunk.shape[0]
        for boundary in range(group, size, group):
            axes.axhline(boundary - 0.5, color="tab:red", linewidth=0.6)
        axes.set_yticks([group * k + (group - 1) / 2 for k in range(len(group_labels))], list(group_labels))
    suffix = f" (first {shown} of {count} spikes)" if shown < count else f" ({count} spikes)"
    axes.set_title(title + suffix)
    figure.tight_layout()
    return _to_png(figure)


def weight_grid(
    weight: torch.Tensor | np.ndarray,
    image_shape: Sequence[int],
    *,
    title: str = "input weights",
    max_neurons: int = 400,
) -> bytes:
    """Draw each postsynaptic neuron's input weights as an image, in a grid.

    Args:
        weight: ``(pre_size, post_size)`` weights of a dense connection, as
            stored by :class:`ember.connections.Dense`.
        image_shape: the input's image shape, ``(height, width)`` or
            ``(channels, height, width)`` (channels are averaged), whose
            product is ``pre_size``.
        title: the figure title.
        max_neurons: at most this many neurons are drawn (the first ones).

    Returns:
        PNG bytes.

    Raises:
        ValueError: if ``image_shape`` does not match ``pre_size``.
    """
    weight = _numpy(weight)
    if weight.ndim != 2:
        raise ValueError(f"weight must have shape (pre_size, post_size), got {weight.shape}")
    image_shape = tuple(int(size) for size in image_shape)
    if math.prod(image_shape) != weight.shape[0] or len(image_shape) not in (2, 3):
        raise ValueError(
            f"image_shape {image_shape} must be (height, width) or (channels, height, width) "
            f"with {weight.shape[0]} pixels in all"
        )
    n_neurons = min(weight.shape[1], max_neurons)
    images = weight[:, :n_neurons].T.reshape(n_neurons, *image_shape)
    if images.ndim == 4:
        images = images.mean(axis=1)
    height, width = images.shape[1:]
    columns = math.ceil(math.sqrt(n_neurons))
    rows = math.ceil(n_neurons / columns)

    # Tile the images into one array with a one-pixel NaN border between tiles.
    canvas = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for neuron in range(n_neurons):
        row, column = divmod(neuron, columns)
        top, left = row * (height + 1), column * (width + 1)
        canvas[top : top + height, left : left + width] = images[neuron]

    size = min(12.0, max(3.0, 0.35 * columns * max(1.0, width / 8)))
    figure = Figure(figsize=(size + 1.2, size))
    axes = figure.add_subplot()
    finite = canvas[np.isfinite(canvas)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    shown = axes.imshow(canvas, cmap="hot_r", interpolation="nearest", vmin=low, vmax=high if high > low else low + 1)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"{title} ({n_neurons} neurons)")
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return _to_png(figure)


def delay_histogram(delays: torch.Tensor | np.ndarray, *, title: str = "delays", bins: int = 50) -> bytes:
    """Draw a histogram of synaptic delays in ms.

    Returns:
        PNG bytes.
    """
    values = _numpy(delays).reshape(-1)
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    axes.hist(values, bins=bins, color="tab:orange", edgecolor="black", linewidth=0.3)
    axes.set_xlabel("delay (ms)")
    axes.set_ylabel("synapses")
    if values.size:
        axes.set_title(f"{title} (mean {values.mean():.3g} ms, {values.size} synapses)")
    else:
        axes.set_title(f"{title} (no synapses)")
    figure.tight_layout()
    return _to_png(figure)


def accuracy_curve(samples: Sequence[int], accuracies: Sequence[float], *, title: str = "accuracy") -> bytes:
    """Draw accuracy (fraction correct) against the number of training samples.

    Args:
        samples: training samples seen at each point.
        accuracies: accuracy at each point, in [0, 1].

    Returns:
        PNG bytes.
    """
    x = _numpy(samples)
    y = _numpy(accuracies)
    if x.shape != y.shape:
        raise ValueError(f"samples and accuracies must have one length, got {x.shape[0]} and {y.shape[0]}")
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    axes.plot(x, y * 100.0, marker="o", color="tab:green")
    axes.set_xlabel("training samples")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.grid(True, alpha=0.3)
    axes.set_title(title)
    figure.tight_layout()
    return _to_png(figure)


def confusion_matrix_plot(matrix: torch.Tensor | np.ndarray, *, title: str = "confusion matrix") -> bytes:
    """Draw a confusion matrix (rows: true class, columns: predicted class) with counts.

    Returns:
        PNG bytes.
    """
    counts = _numpy(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {counts.shape}")
    n_classes = counts.shape[0]
    figure = Figure(figsize=(1.0 + 0.55 * n_classes, 0.6 + 0.5 * n_classes))
    axes = figure.add_subplot()
    shown = axes.imshow(counts, cmap="Blues", interpolation="nearest")
    threshold = counts.max() / 2 if counts.size else 0
    for true in range(n_classes):
        for predicted in range(n_classes):
            value = counts[true, predicted]
            colour = "white" if value > threshold else "black"
            axes.text(predicted, true, f"{int(value)}", ha="center", va="center", fontsize=7, color=colour)
    axes.set_xticks(range(n_classes))
    axes.set_yticks(range(n_classes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.colorbar(shown, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return _to_png(figure)


def bar_chart(labels: Sequence[str], values: Sequence[float], *, ylabel: str, title: str) -> bytes:
    """Draw one bar per label, for per-map measures such as direction selectivity.

    Returns:
        PNG bytes.
    """
    heights = _numpy(values)
    figure = Figure(figsize=(max(4.0, 0.6 * len(labels) + 2), 4))
    axes = figure.add_subplot()
    axes.bar(range(len(labels)), heights, color="tab:purple")
    axes.set_xticks(range(len(labels)), [str(label) for label in labels])
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    figure.tight_layout()
    return _to_png(figure)


def kernel_grid(
    kernels: torch.Tensor | np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    title: str = "kernels",
    unit: str | None = None,
    max_kernels: int = 64,
) -> bytes:
    """Draw the kernels of a convolution side by side, one titled panel each, on one colour scale.

    Args:
        kernels: ``(maps, height, width)`` or ``(maps, channels, height,
            width)`` values (channels are averaged), for example weights or
            delays in ms.
        labels: one panel title per map; default ``"map k"``.
        title: the figure title.
        unit: the colour bar's label, for example ``"delay (ms)"``.
        max_kernels: at most this many maps are drawn (the first ones).

    Returns:
        PNG bytes.

    Raises:
        ValueError: if ``kernels`` is not 3-D or 4-D, or ``labels`` has the
            wrong length.
    """
    values = _numpy(kernels).astype(np.float64)
    if values.ndim == 4:
        values = values.mean(axis=1)
    if values.ndim != 3:
        raise ValueError(f"kernels must have shape (maps, height, width) or (maps, channels, height, width), got {values.shape}")
    if labels is not None and len(labels) != values.shape[0]:
        raise ValueError(f"labels must have one entry per map ({values.shape[0]}), got {len(labels)}")
    count = min(values.shape[0], max_kernels)
    columns = min(count, 8)
    rows = math.ceil(count / columns)
    low, high = float(values[:count].min()), float(values[:count].max())
    figure = Figure(figsize=(1.8 * columns + 1.2, 1.9 * rows + 0.6))
    panels = figure.subplots(rows, columns, squeeze=False)
    image = None
    for index, axes in enumerate(panels.flat):
        axes.set_xticks([])
        axes.set_yticks([])
        if index >= count:
            axes.set_axis_off()
            continue
        image = axes.imshow(values[index], cmap="viridis", interpolation="nearest", vmin=low, vmax=high if high > low else low + 1)
        axes.set_title(labels[index] if labels is not None else f"map {index}", fontsize=9)
    figure.suptitle(title)
    colorbar = figure.colorbar(image, ax=panels.ravel().tolist(), fraction=0.046, pad=0.04)
    if unit:
        colorbar.set_label(unit)
    return _to_png(figure)
