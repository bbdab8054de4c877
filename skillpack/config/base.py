"""What every params section shares: strict validation, and the value types of several sections."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationInfo, field_validator


def _yaml_off_is_off(value):
    # YAML 1.1 (and so `-S train.amp=off`) reads a bare off as false
    return "off" if value is False else value


AmpMode = Annotated[Literal["auto", "off", "fp16", "bf16"], BeforeValidator(_yaml_off_is_off)]
CompileMode = Annotated[Literal["off", "default", "reduce-overhead", "max-autotune"], BeforeValidator(_yaml_off_is_off)]


def _scalar_kinds(annotation) -> set[type]:
    """bool / int / float among a field's annotation (through Optional, Annotated and unions)."""
    import typing

    if annotation in (bool, int, float):
        return {annotation}
    return {kind for arg in typing.get_args(annotation) for kind in _scalar_kinds(arg)}


class StrictModel(BaseModel):
    """Unknown keys, infinities and NaNs are errors; so is a yes/no where a number belongs
    (pydantic's lax mode reads `epochs: true` as 1)."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_no_for_numbers(cls, value, info: ValidationInfo):
        kinds = _scalar_kinds(cls.model_fields[info.field_name].annotation)
        if isinstance(value, bool) and kinds & {int, float} and bool not in kinds:
            raise ValueError(f"expected a number, got {str(value).lower()}")
        return value


def _registered_model(name: str) -> str:
    from skillpack.model_names import ARCH_PREFIX, is_known_model  # names only: no torch or timm import

    if name.startswith(ARCH_PREFIX):
        from skillpack.config.architecture import parse_arch_name

        parse_arch_name(name)  # a bad architecture: an ArchError naming the part that is wrong
    if not is_known_model(name):
        raise ValueError(f"unknown model {name!r}; `skillpack models` lists the choices (any timm name)")
    return name


ModelName = Annotated[str, AfterValidator(_registered_model)]
