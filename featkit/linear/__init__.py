"""Stage 3: linear classifiers on GAP features: the one-vs-all SVM, its svm.h5, the split protocols."""

from featkit.linear.classifier import LinearClassifier, top_classes
from featkit.linear.protocol import (
    Metrics,
    ProtocolResult,
    check_svm_options,
    classifier_fold,
    eval_split,
    evaluate,
    refuse_training_rows,
    run_protocol,
    split_rows,
    train_svm,
)
from featkit.linear.svm import OneVsAllLinearSVM
from featkit.linear.svmfile import classifier_for, load_svm, save_svm

__all__ = [
    "LinearClassifier",
    "Metrics",
    "OneVsAllLinearSVM",
    "ProtocolResult",
    "check_svm_options",
    "classifier_for",
    "classifier_fold",
    "eval_split",
    "evaluate",
    "load_svm",
    "refuse_training_rows",
    "run_protocol",
    "save_svm",
    "split_rows",
    "top_classes",
    "train_svm",
]
