"""champion moves by rule: the paired interval of the accuracy difference on the same test set
must clear the margin - a worse candidate never moves it, a better one does."""
import numpy as np
import pytest
import torch

from skillpack.deploy.promotion import decide
from skillpack.stats import paired_accuracy_difference


def test_paired_interval_and_mcnemar_by_hand():
    from scipy import stats

    champion = np.array([1] * 900 + [0] * 100, bool)
    candidate = champion.copy()
    candidate[900:960] = True   # 60 images only the candidate gets right
    candidate[:20] = False      # 20 only the champion gets right
    delta, low, high, p = paired_accuracy_difference(candidate, champion)
    assert delta == pytest.approx(0.04)
    half = 1.959964 * np.sqrt((60 + 20 - 1000 * 0.04 ** 2) / 1000 ** 2)
    assert (low, high) == pytest.approx((0.04 - half, 0.04 + half), abs=1e-6)
    assert p == pytest.approx(stats.binomtest(60, 80, 0.5).pvalue)


def test_decide_promotes_only_past_the_margin():
    rng = np.random.default_rng(0)
    champion = rng.random(5000) < 0.90
    better = champion | (rng.random(5000) < 0.3)   # strictly more right answers
    assert decide(better, champion).promote
    assert not decide(champion, better).promote      # worse
    assert not decide(champion, champion).promote    # the same
    d = decide(better, champion)
    assert not decide(better, champion, margin_points=d.ci_low_points + 0.01).promote  # the interval must clear it
    first = decide(champion, None)
    assert first.promote and "no champion" in first.reason


@pytest.fixture(scope="module")
def registry(fmnist, small_model, tmp_path_factory):
    """Two ONNX versions in a real MLflow registry: a trained model and an untrained one."""
    import mlflow

    from skillpack import model_registry, tracking
    from skillpack.config import HeadParams
    from skillpack.deploy import export
    from skillpack.train.models import build_classifier

    folder = tmp_path_factory.mktemp("registry")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    mp.setenv("SKILLPACK_ROOT", str(folder))
    good, x = small_model
    torch.manual_seed(1)
    bad = build_classifier("sp_cnn_s", 10, (28, 28, 1), HeadParams(), [72.9], [90.0]).eval()
    versions = {}
    tracking.setup()
    for name, model in (("good", good), ("bad", bad)):
        path = export.export_onnx(model, folder / f"{name}.onnx", (28, 28, 1),
                                  metadata={"classes": fmnist.classes, "model_name": name})
        with mlflow.start_run():
            versions[name], _ = model_registry.register_onnx_model(path, "m", f"is-{name}", name, x[:2], description=name)
    test = fmnist.splits["test"]
    yield versions, np.array(test.images[:2000]), test.labels[:2000]
    mp.undo()


def test_a_worse_candidate_keeps_the_champion_and_a_better_one_takes_it(registry):
    from mlflow import MlflowClient

    from flows.retrain import promote_if_better

    versions, images, labels = registry
    client = MlflowClient()
    client.set_registered_model_alias("m", "champion", versions["good"])
    kept = promote_if_better.fn("m", "is-bad", "champion", images, labels, 0.0, 0.95)
    assert not kept["promote"] and kept["champion_version"] == versions["good"]
    assert str(client.get_model_version_by_alias("m", "champion").version) == versions["good"]
    tags = client.get_model_version("m", versions["bad"]).tags
    assert tags["promotion.promoted"] == "False" and "kept the champion" in tags["promotion.reason"]

    client.set_registered_model_alias("m", "champion", versions["bad"])
    moved = promote_if_better.fn("m", "is-good", "champion", images, labels, 0.0, 0.95)
    assert moved["promote"] and moved["ci_low_points"] > 0
    assert str(client.get_model_version_by_alias("m", "champion").version) == versions["good"]
    assert "Promotion:** promoted" in client.get_model_version("m", versions["good"]).description
