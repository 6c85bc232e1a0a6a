import pytest
import torch

from dstlab.topology.observers import TopologyTracker, jaccard, similarity_matrix


def _m(*bits):
    return torch.tensor(bits, dtype=torch.bool)


def test_itop_and_churn_exactly_on_hand_made_masks():
    tracker = TopologyTracker({"a": _m(1, 1, 0, 0), "b": _m(1, 0, 0, 0, 0, 0)})  # 10 weights
    first = tracker.observe({"a": _m(0, 1, 1, 0), "b": _m(0, 1, 0, 0, 0, 0)})
    # ever active: a 1110, b 110000 -> 5 of 10; initial vs now: ∩ = 1 (a), ∪ = 3 + 2 = 5
    assert first == {"itop": 0.5, "churn": pytest.approx(0.8)}
    second = tracker.observe({"a": _m(0, 0, 1, 1), "b": _m(1, 0, 0, 0, 0, 0)})
    # ever active: a 1111, b 110000 -> 6 of 10; ∩ = 0 + 1, ∪ = 4 + 1
    assert second == {"itop": 0.6, "churn": pytest.approx(0.8)}
    back = tracker.observe({"a": _m(1, 1, 0, 0), "b": _m(1, 0, 0, 0, 0, 0)})
    assert back == {"itop": 0.6, "churn": 0.0}  # ITOP never falls; churn is against the start


def test_tracker_state_round_trip_continues_exactly():
    tracker = TopologyTracker({"a": _m(1, 1, 0, 0)})
    tracker.observe({"a": _m(0, 1, 1, 0)})
    other = TopologyTracker({"a": _m(0, 0, 0, 1)})
    other.load_state_dict(tracker.state_dict())
    now = {"a": _m(0, 0, 1, 1)}
    assert other.observe(now) == tracker.observe(now) == {"itop": 1.0, "churn": 1.0}


def test_jaccard_and_similarity_matrix_exactly():
    assert jaccard(_m(1, 1, 0), _m(0, 1, 1)) == pytest.approx(1 / 3)
    assert jaccard(_m(0, 0), _m(0, 0)) == 1.0
    removed = {
        "x": {"l1": _m(1, 1, 0, 0), "l2": _m(1, 0)},
        "y": {"l1": _m(0, 1, 1, 0), "l2": _m(1, 0)},
    }
    sim = similarity_matrix(removed, ["x", "y"])
    # pooled: (1 + 1) / (3 + 1); per layer 1/3 and 1
    assert sim["pooled"] == [[1.0, 0.5], [0.5, 1.0]]
    assert (
        sim["per_layer"]["l1"][0][1] == pytest.approx(1 / 3) and sim["per_layer"]["l2"][1][0] == 1
    )
