"""Read-outs: Diehl and Cook labelling and voting, detection rates, direction selectivity."""

from __future__ import annotations

import math

import pytest
import torch

from ember.evaluation import (
    NO_PREDICTION,
    LabelAccumulator,
    accuracy,
    assign_labels,
    classify,
    confusion_matrix,
    detection_rates,
    direction_selectivity,
)


def constructed_responses() -> tuple[torch.Tensor, torch.Tensor]:
    """Six samples of three classes; neurons 0-1 answer class 0, 2 class 1, 3 class 2, 4 never spikes."""
    counts = torch.tensor(
        [
            [6.0, 4.0, 0.0, 1.0, 0.0],  # class 0
            [4.0, 6.0, 1.0, 0.0, 0.0],  # class 0
            [0.0, 1.0, 5.0, 0.0, 0.0],  # class 1
            [1.0, 0.0, 3.0, 1.0, 0.0],  # class 1
            [0.0, 0.0, 1.0, 7.0, 0.0],  # class 2
            [0.0, 1.0, 0.0, 5.0, 0.0],  # class 2
        ]
    )
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return counts, labels


def test_assignments_by_max_average_response():
    counts, labels = constructed_responses()
    # Averages per class: neuron 1 -> (5, 0.5, 0.5); neuron 3 -> (0.5, 0.5, 6).
    assert assign_labels(counts, labels, 3).tolist() == [0, 0, 1, 2, NO_PREDICTION]


def test_assignment_uses_averages_not_sums():
    # Class 0 has three samples with 2 spikes each (sum 6, mean 2); class 1 one sample with 3.
    counts = torch.tensor([[2.0], [2.0], [2.0], [3.0]])
    assert assign_labels(counts, torch.tensor([0, 0, 0, 1]), 2).tolist() == [1]


def test_streaming_accumulator_equals_one_shot():
    counts, labels = constructed_responses()
    accumulator = LabelAccumulator(3, 5)
    accumulator.add(counts[:2], labels[:2])
    accumulator.add(counts[2:], labels[2:])
    assert torch.equal(accumulator.assignments(), assign_labels(counts, labels, 3))
    restored = LabelAccumulator(3, 5)
    restored.load_state(accumulator.state())
    assert torch.equal(restored.response_sums, accumulator.response_sums)


def test_classification_by_mean_count_of_labelled_neurons():
    assignments = torch.tensor([0, 0, 1, 2, NO_PREDICTION])
    test = torch.tensor(
        [
            [3.0, 1.0, 1.0, 0.0, 9.0],  # class 0 mean 2, class 1 mean 1 -> 0
            [1.0, 1.0, 2.0, 0.0, 0.0],  # class 0 mean 1, class 1 2 -> 1
            [0.0, 0.0, 0.0, 0.0, 9.0],  # only the unlabelled neuron spikes -> no prediction
            [2.0, 2.0, 0.0, 2.0, 0.0],  # tie between classes 0 and 2 -> lowest class
        ]
    )
    predictions = classify(test, assignments, 3)
    assert predictions.tolist() == [0, 1, NO_PREDICTION, 0]


def test_accuracy_and_confusion_matrix():
    predictions = torch.tensor([0, 1, NO_PREDICTION, 0, 2])
    labels = torch.tensor([0, 1, 1, 2, 2])
    assert accuracy(predictions, labels) == pytest.approx(3 / 5)
    assert confusion_matrix(predictions, labels, 3).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert math.isnan(accuracy(torch.zeros(0), torch.zeros(0)))


def test_end_to_end_labelling_on_constructed_example():
    counts, labels = constructed_responses()
    assignments = assign_labels(counts, labels, 3)
    predictions = classify(counts, assignments, 3)
    assert predictions.tolist() == labels.tolist()
    assert accuracy(predictions, labels) == 1.0


def test_labels_out_of_range_rejected():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        assign_labels(torch.ones(2, 1), torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="counts"):
        classify(torch.ones(2, 3), torch.zeros(2, dtype=torch.long), 2)


def test_detection_rates():
    detected = torch.tensor([True, True, False, True, False, False, False])
    present = torch.tensor([True, True, True, False, False, False, False])
    rates = detection_rates(detected, present)
    assert rates["hit_rate"] == pytest.approx(2 / 3)
    assert rates["false_alarm_rate"] == pytest.approx(1 / 4)


def test_direction_selectivity_index():
    # Map 0 prefers direction 1 (4 vs 1 opposite), map 1 direction 2 purely, map 2 is silent.
    responses = torch.tensor(
        [
            [0.0, 0.0, 0.0],
            [4.0, 0.0, 0.0],
            [0.0, 3.0, 0.0],
            [1.0, 0.0, 0.0],
        ]
    )
    result = direction_selectivity(responses)
    assert result["preferred"] == [1, 2, -1]
    assert result["dsi"] == [pytest.approx(0.6), 1.0, 0.0]
    with pytest.raises(ValueError, match="even number"):
        direction_selectivity(torch.ones(3, 2))
