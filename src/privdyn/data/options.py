"""Typed ``dataset.options`` for every registered dataset, validated like every other config field.

File loaders read their options with their own defaults; these models only refuse what a loader
would otherwise ignore or misread (unknown keys, wrong types, values out of range), naming the
field. ``None`` means "the loader's default".
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privdyn.errors import PrivdynError


class Options(BaseModel):
    """Base of the dataset options models: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class PathOptions(Options):
    """Options of a dataset read from files: where its file or folder is."""

    path: str | None = Field(None, description="the file or folder to read (relative to the data root)")


class TabularOptions(PathOptions):
    """Options of location30, purchase100 and texas100: the test share and the feature normalisation."""

    test_fraction: float | None = Field(None, gt=0, lt=1, description="test share when the file has one split")
    normalise: Literal["feature", "global", "none"] | None = Field(None, description="feature standardisation")


class NpzOptions(TabularOptions):
    """Options of ``npz`` (your own arrays): the features' kind, the image layout and the number of classes."""

    kind: Literal["tabular", "image", "sequence"] | None = Field(None, description="what the features are")
    layout: Literal["nchw", "nhwc"] | None = Field(None, description="image channel axis when ambiguous")
    num_classes: int | None = Field(None, ge=2, description="number of classes (default: from the labels)")


class Cifar100Options(PathOptions):
    """Options of cifar100: its 100 fine or 20 coarse labels."""

    labels: Literal["fine", "coarse"] = Field("fine", description="100 fine or 20 coarse labels")


class ImageFolderOptions(PathOptions):
    """Options of ``imagefolder``: the number of channels and the pool and test folder names."""

    channels: Literal[1, 3] | None = Field(None, description="1 (greyscale) or 3 (RGB); default: inferred")
    train_split: str | None = Field(None, min_length=1, description="pool folder (default train)")
    test_split: str | None = Field(None, min_length=1, description="test folder (default test)")


def parse_options(model: type[BaseModel], options: dict[str, Any], dataset: str) -> Any:
    """Validate ``dataset.options`` against ``model`` (unknown keys are errors)."""
    try:
        return model.model_validate(options)
    except ValidationError as err:
        problems = "; ".join(f"dataset.options.{'.'.join(map(str, e['loc'])) or '(all)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in err.errors())
        raise PrivdynError(f"Invalid options for dataset {dataset!r}: {problems}. Accepted options: "
                           f"{', '.join(model.model_fields) or 'none'}.") from None
