"""Typed params: params.yaml is read here and nowhere else.

`load_params()` validates the file against the models of this package (unknown keys are errors
that name the field), and `apply_overrides()` takes dotted `key=value` strings such as
`train.lr=0.05`, the same syntax as `dvc exp run -S`.

    base.py       strict validation every section shares
    train.py      the train section (TrainParams and its parts; derive, for trainings made from another)
    sections.py   every other section and Params, the whole file
    overrides.py  dotted keys: apply_overrides, with_overrides, flatten; ParamsError
    load.py       load_params, load_section, read_yaml
"""
from __future__ import annotations

from skillpack.config.base import AmpMode, CompileMode, ModelName
from skillpack.config.load import load_params, load_section, read_yaml
from skillpack.config.overrides import ParamsError, apply_overrides, flatten, with_overrides
from skillpack.config.sections import (
    RUNTIME_KEYS,
    SERVE_RULES,
    UNTRACKED_SECTIONS,
    AblationParams,
    AlertParams,
    AliasesParams,
    CleanlabParams,
    CleanParams,
    CompressParams,
    DataParams,
    DbscanParams,
    DetectorName,
    EnsembleParams,
    EvaluateParams,
    ExplainParams,
    ExportParams,
    GradientParams,
    ImplausibleParams,
    MonitorParams,
    NasParams,
    OofParams,
    Params,
    PretrainParams,
    QuantizeParams,
    RegimeOptions,
    RegistryParams,
    RetrainParams,
    RuntimeParams,
    ServeParams,
    TaskRunnerParams,
    TuneParams,
    ValidateParams,
    VoteParams,
    regime_options,
)
from skillpack.config.train import (
    POLICY_OPTIONS,
    AugmentParams,
    ColorJitterParams,
    DistillParams,
    EmaParams,
    HeadParams,
    LookaheadParams,
    LossParams,
    OptimizerParams,
    ScheduleParams,
    TrainOverrides,
    TrainParams,
    derive,
)

__all__ = [
    "AmpMode", "CompileMode", "ModelName",
    "load_params", "load_section", "read_yaml",
    "ParamsError", "apply_overrides", "flatten", "with_overrides",
    "RUNTIME_KEYS", "SERVE_RULES", "UNTRACKED_SECTIONS", "AblationParams", "AlertParams", "AliasesParams",
    "CleanlabParams", "CleanParams", "CompressParams", "DataParams", "DbscanParams", "DetectorName", "EnsembleParams",
    "EvaluateParams", "ExplainParams", "ExportParams", "GradientParams", "ImplausibleParams", "MonitorParams",
    "NasParams", "OofParams", "Params", "PretrainParams", "QuantizeParams", "RegimeOptions", "RegistryParams", "RetrainParams",
    "RuntimeParams", "ServeParams", "TaskRunnerParams", "TuneParams", "ValidateParams", "VoteParams", "regime_options",
    "POLICY_OPTIONS", "AugmentParams", "ColorJitterParams", "DistillParams", "EmaParams", "HeadParams",
    "LookaheadParams", "LossParams", "OptimizerParams", "ScheduleParams", "TrainOverrides", "TrainParams", "derive",
]
