"""The service's Prometheus metrics (prometheus-client), in their own registry.

Names the alert rules of skillpack.deploy.monitoring refer to: skillpack_request_latency_seconds,
skillpack_requests_total, skillpack_predictions_total, skillpack_confidence,
skillpack_rolling_accuracy, skillpack_feedback_in_window, skillpack_drift_class_distance,
skillpack_drift_confidence_shift, skillpack_drift_input_distance, skillpack_model_info and
process_resident_memory_bytes.
"""
from __future__ import annotations

from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BUCKETS = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2)) + (0.95, 0.99)
BRIGHTNESS_BINS = 16   # histogram of an image's mean pixel value (0..255): the input-drift signal


def brightness_bins(images: np.ndarray) -> np.ndarray:
    """Each uint8 N x H x W x C image's mean pixel value, as its bin of BRIGHTNESS_BINS."""
    means = images.reshape(len(images), -1).mean(axis=1)
    return np.minimum((means * BRIGHTNESS_BINS / 256).astype(np.int64), BRIGHTNESS_BINS - 1)


def brightness_distribution(images: np.ndarray | None) -> np.ndarray | None:
    """The share of each brightness bin over `images` (the test set: the input-drift reference)."""
    if images is None or not len(images):
        return None
    counts = np.bincount(brightness_bins(images), minlength=BRIGHTNESS_BINS)
    return counts / counts.sum()


class SlidingShares:
    """Shares of the last `window` observations over `bins` categories, with running counts
    (a request costs O(its items), not O(window)), and their total variation distance from a
    reference distribution."""

    def __init__(self, bins: int, window: int, reference: np.ndarray | None):
        self.recent: deque[int] = deque(maxlen=window)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.reference = reference

    def add(self, k: int) -> None:
        if len(self.recent) == self.recent.maxlen:
            self.counts[self.recent[0]] -= 1
        self.recent.append(k)
        self.counts[k] += 1

    def distance(self) -> float | None:
        if self.reference is None or not self.recent:
            return None
        return 0.5 * float(np.abs(self.counts / len(self.recent) - self.reference).sum())


class ServiceMetrics:
    def __init__(self, classes: list[str], reference_distribution: np.ndarray | None, reference_confidence: float | None,
                 feedback_window: int, drift_window: int, reference_brightness: np.ndarray | None = None):
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
        self.input_drift = Gauge("skillpack_drift_input_distance", "Total variation distance between the "
                                 "mean-brightness histogram of the last drift_window images and the test set's",
                                 registry=r)
        self.model = Info("skillpack_model", "The model being served", registry=r)
        self.accuracy.set(float("nan"))
        self.classes = classes
        self.reference_confidence = reference_confidence
        # sliding windows with running sums: a request costs O(its images), not O(window)
        self.recent_classes = SlidingShares(len(classes), drift_window, reference_distribution)
        self.recent_brightness = SlidingShares(BRIGHTNESS_BINS, drift_window, reference_brightness)
        self.recent_confidence: deque[float] = deque(maxlen=drift_window)
        self.labelled: deque[bool] = deque(maxlen=feedback_window)
        self.confidence_sum, self.right = 0.0, 0

    def observe_images(self, images: np.ndarray) -> None:
        for k in brightness_bins(images).tolist():
            self.recent_brightness.add(k)
        distance = self.recent_brightness.distance()
        if distance is not None:
            self.input_drift.set(distance)

    def observe_predictions(self, predicted: np.ndarray, confidence: np.ndarray) -> None:
        for k, p in zip(predicted.tolist(), confidence.tolist()):
            self.predictions.labels(self.classes[k]).inc()
            self.confidence.observe(p)
            if len(self.recent_confidence) == self.recent_confidence.maxlen:
                self.confidence_sum -= self.recent_confidence[0]
            self.recent_classes.add(k)
            self.recent_confidence.append(p)
            self.confidence_sum += p
        distance = self.recent_classes.distance()
        if distance is not None:
            self.drift.set(distance)
        if self.reference_confidence is not None:
            self.confidence_shift.set(self.confidence_sum / len(self.recent_confidence) - self.reference_confidence)

    def observe_feedback(self, correct: bool) -> None:
        if len(self.labelled) == self.labelled.maxlen:
            self.right -= self.labelled[0]
        self.labelled.append(correct)
        self.right += correct
        self.accuracy.set(self.right / len(self.labelled))
        self.feedback_count.set(len(self.labelled))
