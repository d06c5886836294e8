"""Read-outs of unsupervised networks: neuron labelling, classification and selectivity.

Diehl & Cook (2015) label each excitatory neuron with the class to which it
responds most, on average, over the labelling samples, and classify a sample
as the class whose labelled neurons have the highest mean spike count. The
functions here accumulate the class responses in a streaming form
(:class:`LabelAccumulator`), so labelling can run over 60 000 samples in
batches and be checkpointed half-way.

The module also contains the measures of the delay-learning experiments: hit
and false-alarm rates of a pattern detector and the direction selectivity of
feature maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: The prediction given to a sample for which no labelled neuron spiked.
NO_PREDICTION = -1


def _check_counts(counts: torch.Tensor, labels: torch.Tensor, n_classes: int) -> None:
    if counts.dim() != 2:
        raise ValueError(f"counts must have shape (samples, neurons), got {tuple(counts.shape)}")
    if labels.dim() != 1 or labels.shape[0] != counts.shape[0]:
        raise ValueError(
            f"labels must have shape (samples,) = ({counts.shape[0]},), got {tuple(labels.shape)}"
        )
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got values in [{labels.min()}, {labels.max()}]")


@dataclass
class LabelAccumulator:
    """Running sums of each neuron's spike count per class.

    Args:
        n_classes: the number of classes.
        n_neurons: the number of labelled neurons.

    Attributes:
        response_sums: float64 tensor ``(n_classes, n_neurons)``, the summed
            spike counts of each neuron over the samples of each class.
        class_counts: int64 tensor ``(n_classes,)``, the samples seen per class.
    """

    n_classes: int
    n_neurons: int

    def __post_init__(self) -> None:
        self.response_sums = torch.zeros(self.n_classes, self.n_neurons, dtype=torch.float64)
        self.class_counts = torch.zeros(self.n_classes, dtype=torch.int64)

    def add(self, counts: torch.Tensor, labels: torch.Tensor) -> None:
        """Add the spike counts of a batch of samples.

        Shape:
            counts: ``(batch, n_neurons)``, spikes per neuron during each sample.
            labels: ``(batch,)``, int class of each sample.
        """
        counts = counts.detach().to("cpu", torch.float64)
        labels = labels.detach().to("cpu", torch.int64)
        _check_counts(counts, labels, self.n_classes)
        self.response_sums.index_add_(0, labels, counts)
        self.class_counts += torch.bincount(labels, minlength=self.n_classes)

    def assignments(self) -> torch.Tensor:
        """Return each neuron's class; see :func:`assign_labels`."""
        return assign_from_sums(self.response_sums, self.class_counts)

    def state(self) -> dict[str, torch.Tensor]:
        """Return the accumulator's tensors, for a checkpoint."""
        return {"response_sums": self.response_sums.clone(), "class_counts": self.class_counts.clone()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the tensors returned by :meth:`state`."""
        self.response_sums = state["response_sums"].to(torch.float64).clone()
        self.class_counts = state["class_counts"].to(torch.int64).clone()


def assign_from_sums(response_sums: torch.Tensor, class_counts: torch.Tensor) -> torch.Tensor:
    """Label neurons from per-class summed responses.

    Args:
        response_sums: ``(n_classes, n_neurons)`` summed spike counts.
        class_counts: ``(n_classes,)`` samples per class.

    Returns:
        int64 ``(n_neurons,)``: the class with the highest average response of
        each neuron, the lowest such class on ties, or ``-1`` for a neuron that
        never spiked. Classes without samples are never assigned.
    """
    counts = class_counts.to(torch.float64).clamp(min=1.0).unsqueeze(1)
    average = response_sums.to(torch.float64) / counts
    average = torch.where(class_counts.unsqueeze(1) > 0, average, torch.full_like(average, -1.0))
    best, assignment = average.max(dim=0)
    return torch.where(best > 0, assignment, torch.full_like(assignment, NO_PREDICTION))


def assign_labels(counts: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Label each neuron with the class of its highest average response.

    Args:
        counts: spike counts, ``(samples, neurons)``.
        labels: class of each sample, int, ``(samples,)``.
        n_classes: the number of classes.

    Returns:
        int64 ``(neurons,)`` classes; ``-1`` for a neuron that never spiked.

    Raises:
        ValueError: on mismatched shapes or labels outside ``[0, n_classes)``.

    Examples:
        >>> counts = torch.tensor([[5.0, 0.0], [0.0, 3.0]])
        >>> assign_labels(counts, torch.tensor([1, 0]), 2).tolist()
        [1, 0]
    """
    accumulator = LabelAccumulator(n_classes, counts.shape[1] if counts.dim() == 2 else 0)
    accumulator.add(counts, labels)
    return accumulator.assignments()


def classify(counts: torch.Tensor, assignments: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Classify samples by the mean spike count of the neurons labelled with each class.

    Args:
        counts: spike counts, ``(samples, neurons)``.
        assignments: int class of each neuron, ``(neurons,)``; ``-1`` neurons are ignored.
        n_classes: the number of classes.

    Returns:
        int64 ``(samples,)``: the class with the highest mean count (the lowest
        such class on ties), or ``-1`` when no labelled neuron spiked, which
        counts as wrong in :func:`accuracy`.

    Examples:
        >>> counts = torch.tensor([[4.0, 0.0, 1.0], [0.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
        >>> classify(counts, torch.tensor([0, 1, 1]), 2).tolist()
        [0, 1, -1]
    """
    if counts.dim() != 2 or assignments.dim() != 1 or counts.shape[1] != assignments.shape[0]:
        raise ValueError(
            f"counts (samples, neurons) and assignments (neurons,) must agree, got "
            f"{tuple(counts.shape)} and {tuple(assignments.shape)}"
        )
    counts = counts.detach().to("cpu", torch.float64)
    assignments = assignments.detach().to("cpu", torch.int64)
    means = torch.full((counts.shape[0], n_classes), float("-inf"), dtype=torch.float64)
    for label in range(n_classes):
        members = assignments == label
        if members.any():
            means[:, label] = counts[:, members].mean(dim=1)
    best, prediction = means.max(dim=1)
    return torch.where(best > 0, prediction, torch.full_like(prediction, NO_PREDICTION))


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the fraction of correct predictions (``-1`` is never correct); NaN for no samples."""
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} must match")
    if predictions.numel() == 0:
        return float("nan")
    return float((predictions.to(torch.int64) == labels.to(torch.int64)).to(torch.float64).mean())


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Return counts ``(n_classes, n_classes)``: row = true class, column = predicted class.

    Samples without a prediction (``-1``) are left out; count them with
    ``(predictions == -1).sum()``.
    """
    predictions = predictions.to("cpu", torch.int64)
    labels = labels.to("cpu", torch.int64)
    keep = predictions >= 0
    flat = labels[keep] * n_classes + predictions[keep]
    return torch.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def detection_rates(detected: torch.Tensor, present: torch.Tensor) -> dict[str, float]:
    """Return the hit and false-alarm rates of a detector.

    Args:
        detected: bool ``(samples,)``, whether the detector responded.
        present: bool ``(samples,)``, whether the target (a pattern) was present.

    Returns:
        ``hit_rate``: detections among samples with the target; ``false_alarm_rate``:
        detections among samples without it. Either is NaN without such samples.

    Examples:
        >>> detection_rates(torch.tensor([True, False, True, False]), torch.tensor([True, True, False, False]))
        {'hit_rate': 0.5, 'false_alarm_rate': 0.5}
    """
    detected = detected.to("cpu", torch.bool)
    present = present.to("cpu", torch.bool)
    if detected.shape != present.shape:
        raise ValueError(f"detected {tuple(detected.shape)} and present {tuple(present.shape)} must match")
    hits = detected[present]
    alarms = detected[~present]
    return {
        "hit_rate": float(hits.to(torch.float64).mean()) if hits.numel() else float("nan"),
        "false_alarm_rate": float(alarms.to(torch.float64).mean()) if alarms.numel() else float("nan"),
    }


def direction_selectivity(responses: torch.Tensor) -> dict[str, list]:
    """Measure how strongly each feature map prefers one motion direction.

    Args:
        responses: ``(n_directions, n_maps)`` mean spike count of each map for
            each direction; directions are evenly spaced around the circle, so
            the opposite of direction ``k`` is ``(k + n/2) mod n``.

    Returns:
        ``preferred``: each map's preferred direction (index), ``-1`` for a map
        that never spiked; ``dsi``: each map's direction selectivity index
        ``(R_pref - R_opposite) / (R_pref + R_opposite)``, in [0, 1], 0 for a
        silent map.

    Raises:
        ValueError: if the number of directions is odd (no opposite direction).

    Examples:
        >>> direction_selectivity(torch.tensor([[4.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]))
        {'preferred': [0, 1], 'dsi': [0.6, 0.0]}
    """
    if responses.dim() != 2:
        raise ValueError(f"responses must have shape (directions, maps), got {tuple(responses.shape)}")
    n_directions = responses.shape[0]
    if n_directions % 2:
        raise ValueError(f"direction selectivity needs an even number of directions, got {n_directions}")
    responses = responses.detach().to("cpu", torch.float64)
    best, preferred = responses.max(dim=0)
    opposite = responses[(preferred + n_directions // 2) % n_directions, torch.arange(responses.shape[1])]
    total = best + opposite
    dsi = torch.where(total > 0, (best - opposite) / total.clamp(min=1e-12), torch.zeros_like(total))
    preferred = torch.where(best > 0, preferred, torch.full_like(preferred, -1))
    return {"preferred": preferred.tolist(), "dsi": [round(float(value), 12) for value in dsi]}
