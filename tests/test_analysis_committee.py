"""Committees on known inputs: the accuracy of each committee size from its members' probabilities (the
committees of real sweeps are checked in tests/test_report.py, on its fixture's sweeps)."""

from __future__ import annotations

import pytest
import torch

from gridsearch.analysis.committee import committee_accuracies


def test_committee_accuracies_average_the_first_k_members():
    labels = torch.tensor([0, 1, 1])
    members = torch.tensor(
        [
            [[0.9, 0.1], [0.6, 0.4], [0.4, 0.6]],  # right on 0 and 2
            [[0.2, 0.8], [0.1, 0.9], [0.45, 0.55]],  # right on 1 and 2
            [[0.8, 0.2], [0.8, 0.2], [0.9, 0.1]],
        ]
    )
    padded = torch.nn.functional.pad(members, (0, 8))
    # k=2 means: [.55 .45] [.35 .65] [.425 .575] -> all right; k=3 adds the third: [.633] [.5 .5 -> 0] [.583 -> 0]
    assert committee_accuracies(padded, labels) == pytest.approx([2 / 3, 1, 1 / 3])
