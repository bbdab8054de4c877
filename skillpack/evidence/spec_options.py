"""The options of an ablation spec's arms and teachers (`start:`, `teachers:`), validated with
pydantic: a bad option is one ParamsError naming the spec file and the arm or teacher."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skillpack import config
from skillpack.config import CompressParams

PruneImportance = CompressParams.model_fields["prune_importance"].annotation  # torch-pruning's criteria


class StartOption(BaseModel):
    """An arm's `start: {from: arm, prune_ratio, prune_importance}`: for seed s, the run starts
    from the model the `from` arm's run trains with seed s (its params, its data draw), pruned
    to (1 - prune_ratio) of its channels by skillpack.deploy.compress.prune_channels when prune_ratio
    is given, and trains it further with its own params."""
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str = Field(alias="from")
    prune_ratio: float | None = Field(None, gt=0, lt=1)
    prune_importance: PruneImportance = "l2"

    def as_dict(self) -> dict:
        """What the run key hashes: the importance only where something is pruned."""
        out = {"from": self.from_}
        if self.prune_ratio is not None:
            out.update(prune_ratio=self.prune_ratio, prune_importance=self.prune_importance)
        return out


class TeacherOption(BaseModel):
    """A distillation teacher of `teachers:`. Trained once on its regime with its seed, or, with
    `per_seed: true`, with each run's seed on that run's own data draw (the run's regime): then
    the interval of a distillation arm covers the teacher's seed too."""
    model_config = ConfigDict(extra="forbid")
    overrides: dict = Field(default_factory=dict)
    regime: str = "standard"
    seed: int = 0
    per_seed: bool = False

    @model_validator(mode="after")
    def _per_seed_takes_the_runs_seed_and_data(self):
        if self.per_seed and {"regime", "seed"} & self.model_fields_set:
            raise ValueError("a per_seed teacher trains with each run's seed on that run's data draw: "
                             "drop its regime and seed")
        return self


def parse_option(model: type[BaseModel], raw, where: str):
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(": ".join(filter(None, (".".join(map(str, e["loc"])),
                                                     e["msg"].removeprefix("Value error, ")))) for e in err.errors())
        raise config.ParamsError(f"{where}: {problems}") from None
