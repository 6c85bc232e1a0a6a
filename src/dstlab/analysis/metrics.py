"""The accuracies a report can compare: result.json fields. Kept apart (no pandas) so that the
CLI can offer them without loading the analysis."""

from __future__ import annotations

METRICS = ("test_acc", "test_acc_best_val", "best_val_acc")
#: the study reports the test accuracy of the model with the best validation accuracy
DEFAULT_METRIC = "test_acc_best_val"
_WORDS = {
    "test_acc_best_val": "Accuracy here is the test accuracy of the model with the best "
    "validation accuracy (test_acc_best_val; a run without a validation split reports its final "
    "model); --metric test_acc gives the final model.",
    "test_acc": "Accuracy here is the test accuracy of the final model (test_acc); the default, "
    "--metric test_acc_best_val, gives the model with the best validation accuracy.",
    "best_val_acc": "Accuracy here is the best validation accuracy (best_val_acc), not a test "
    "accuracy; the default, --metric test_acc_best_val, gives that model's test accuracy.",
}


def describe_metric(metric: str) -> str:
    """One sentence that says which model's accuracy on which split the report compares."""
    return _WORDS[metric]
