"""The service's Prometheus metrics (prometheus-client), in their own registry.

Names the alert rules of skillpack.monitoring refer to: skillpack_request_latency_seconds,
skillpack_requests_total, skillpack_predictions_total, skillpack_confidence,
skillpack_rolling_accuracy, skillpack_feedback_in_window, skillpack_drift_class_distance,
skillpack_drift_confidence_shift, skillpack_model_info and process_resident_memory_bytes.
"""
from __future__ import annotations

from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BUCKETS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2)) + (0.95, 0.99)


class ServiceMetrics:
    def __init__(self, classes: list[str], reference_distribution: np.ndarray | None, reference_confidence: float | None,
                 feedback_window: int, drift_window: int):
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, cpu seconds, open fds
        self.latency = Histogram("skillpack_request_latency_seconds", "Request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("skillpack_requests", "Requests by endpoint and status code", ["endpoint", "status"],
                                registry=r)
        self.predictions = Counter("skillpack_predictions", "Predictions by class", ["class_name"], registry=r)
        self.confidence = Histogram("skillpack_confidence", "Top-1 probability of each prediction",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.accuracy = Gauge("skillpack_rolling_accuracy", "Accuracy over the last feedback_window labelled "
                              "predictions (NaN before any)", registry=r)
        self.feedback_count = Gauge("skillpack_feedback_in_window", "Labelled predictions in the window", registry=r)
        self.drift = Gauge("skillpack_drift_class_distance", "Total variation distance between the predicted-class "
                           "distribution of the last drift_window predictions and the test set's", registry=r)
        self.confidence_shift = Gauge("skillpack_drift_confidence_shift", "Mean top-1 probability of the last "
                                      "drift_window predictions minus the test set's", registry=r)
        self.model = Info("skillpack_model", "The model being served", registry=r)
        self.accuracy.set(float("nan"))
        self.classes = classes
        self.reference, self.reference_confidence = reference_distribution, reference_confidence
        # sliding windows with running sums: a request costs O(its images), not O(window)
        self.recent_classes: deque[int] = deque(maxlen=drift_window)
        self.recent_confidence: deque[float] = deque(maxlen=drift_window)
        self.labelled: deque[bool] = deque(maxlen=feedback_window)
        self.class_counts = np.zeros(len(classes), dtype=np.int64)
        self.confidence_sum, self.right = 0.0, 0

    def observe_predictions(self, predicted: np.ndarray, confidence: np.ndarray) -> None:
        for k, p in zip(predicted.tolist(), confidence.tolist()):
            self.predictions.labels(self.classes[k]).inc()
            self.confidence.observe(p)
            if len(self.recent_classes) == self.recent_classes.maxlen:
                self.class_counts[self.recent_classes[0]] -= 1
                self.confidence_sum -= self.recent_confidence[0]
            self.recent_classes.append(k)
            self.recent_confidence.append(p)
            self.class_counts[k] += 1
            self.confidence_sum += p
        if self.reference is not None:
            shares = self.class_counts / len(self.recent_classes)
            self.drift.set(0.5 * float(np.abs(shares - self.reference).sum()))
        if self.reference_confidence is not None:
            self.confidence_shift.set(self.confidence_sum / len(self.recent_confidence) - self.reference_confidence)

    def observe_feedback(self, correct: bool) -> None:
        if len(self.labelled) == self.labelled.maxlen:
            self.right -= self.labelled[0]
        self.labelled.append(correct)
        self.right += correct
        self.accuracy.set(self.right / len(self.labelled))
        self.feedback_count.set(len(self.labelled))
