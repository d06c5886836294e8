"""Plots render valid PNG images of the expected size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from ember import plots
from ember.results import PNG_SIGNATURE, SpikeChunk


def open_png(data: bytes) -> Image.Image:
    assert data[:8] == PNG_SIGNATURE
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


def test_spike_raster():
    chunk = SpikeChunk(
        step=np.array([0, 3, 7, 7]), index=np.array([1, 0, 2, 3]), sample=np.array([0, 0, 1, 1]), dt=1.0, shape=(4,)
    )
    image = open_png(plots.spike_raster(chunk))
    assert image.size == (800, 400)


def test_spike_raster_marks_left_out_records():
    chunk = SpikeChunk(step=np.arange(10), index=np.zeros(10, dtype=np.int64), sample=None, dt=0.5, shape=(1,))
    open_png(plots.spike_raster(chunk, max_points=3))


def test_weight_grid_of_mnist_shaped_weights(generator):
    weight = torch.rand(784, 10, generator=generator)
    image = open_png(plots.weight_grid(weight, (28, 28)))
    assert image.size[0] > 300 and image.size[1] > 300


def test_weight_grid_of_kernels(generator):
    kernels = torch.rand(4, 2, 5, 5, generator=generator)
    open_png(plots.weight_grid(kernels.reshape(4, -1).T, (2, 5, 5)))


def test_spike_raster_with_samples_and_groups():
    chunk = SpikeChunk(
        step=np.array([1, 45, 90]), index=np.array([0, 100, 300]), sample=np.array([0, 1, 2]), dt=1.0, shape=(4, 9, 9)
    )
    labels = ["map 0: east", "map 1: north", "map 2: west", "map 3: south"]
    open_png(plots.spike_raster(chunk, sample_ms=40.0, group_labels=labels))
    with pytest.raises(ValueError, match="one label per slice"):
        plots.spike_raster(chunk, group_labels=labels[:2])


def test_kernel_grid_one_panel_per_map(generator):
    kernels = torch.rand(4, 1, 5, 5, generator=generator) * 8.0
    labels = ["map 0: east", "map 1: north", "map 2: west", "map 3: south"]
    image = open_png(plots.kernel_grid(kernels, labels=labels, title="kernel delays", unit="delay (ms)"))
    # Four panels in a row, each 1.8 inches wide at 100 dpi, plus the colour bar.
    assert image.size[0] >= 4 * 180
    open_png(plots.kernel_grid(torch.ones(10, 3, 3)))


def test_kernel_grid_rejects_bad_input():
    with pytest.raises(ValueError, match="kernels must have shape"):
        plots.kernel_grid(torch.zeros(5, 5))
    with pytest.raises(ValueError, match="one entry per map"):
        plots.kernel_grid(torch.zeros(2, 3, 3), labels=["map 0"])


def test_weight_grid_rejects_wrong_image_shape():
    with pytest.raises(ValueError, match="image_shape"):
        plots.weight_grid(torch.zeros(10, 2), (3, 3))


def test_delay_histogram(generator):
    open_png(plots.delay_histogram(torch.rand(100, generator=generator) * 10.0))
    open_png(plots.delay_histogram(torch.zeros(0)))


def test_accuracy_curve_and_confusion_matrix():
    open_png(plots.accuracy_curve([100, 200, 300], [0.3, 0.5, 0.7]))
    image = open_png(plots.confusion_matrix_plot(torch.eye(10, dtype=torch.long) * 9))
    assert image.size[0] > 400
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix_plot(torch.zeros(2, 3))


def test_bar_chart():
    open_png(plots.bar_chart(["map 0", "map 1"], [0.2, 0.9], ylabel="index", title="selectivity"))
