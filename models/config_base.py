"""What every model configuration shares: a dataclass that reads and writes Hugging Face's
``config.json``, and the checks of its fields.

Every field is validated when the config is made, so a bad value fails with a ``ValueError``
naming the field, long before a model allocates anything. Keys a config file carries that we do
not model (``architectures``, ``task_specific_params``, ...) are kept in ``extra`` and written back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..download import atomic_write, download_options, resolve_file
from ..errors import ArgumentTypeError, GPTHubError, InvalidArgumentError, UnknownArgumentError, flag

CONFIG_NAME = "config.json"


class ConfigError(GPTHubError, ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


def check_int(cls_name: str, name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{cls_name}.{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"{cls_name}.{name} must be >= {minimum}, got {value}")


def check_float(cls_name: str, name: str, value: Any, *, low: float, high: float, high_open: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{cls_name}.{name} must be a number, got {value!r} ({type(value).__name__})")
    if not (low <= value < high if high_open else low <= value <= high):
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{cls_name}.{name} must be in [{low}, {high}{bracket}, got {value}")


@dataclass(kw_only=True)
class PretrainedConfig:
    """Fields every model family shares: labels, special token ids and output switches."""

    model_type: ClassVar[str] = ""
    is_encoder_decoder: ClassVar[bool] = False  # read by code written for transformers
    name_or_path: ClassVar[str] = ""  # set on the instance by from_pretrained: where it was read
    # Hugging Face's generic names for our fields (``config.hidden_size`` is ``config.n_embd``).
    attribute_map: ClassVar[dict[str, str]] = {
        "hidden_size": "n_embd",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "max_position_embeddings": "n_positions",
    }

    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    tie_word_embeddings: bool = True
    num_labels: int = 2
    id2label: dict[int, str] | None = None
    problem_type: str | None = None
    classifier_dropout: float | None = None
    use_cache: bool = True
    output_attentions: bool = False
    output_hidden_states: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.id2label is not None:
            if not isinstance(self.id2label, dict):
                raise ConfigError(f"{type(self).__name__}.id2label must map ids to labels, got a "
                                  f"{type(self.id2label).__name__}")
            try:
                self.id2label = {int(k): str(v) for k, v in self.id2label.items()}
            except (TypeError, ValueError):
                raise ConfigError(f"{type(self).__name__}.id2label must map integer ids to labels") from None
            self.num_labels = len(self.id2label)
        self.validate()

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: serve the generic aliases and the extra keys.
        alias = type(self).attribute_map.get(name)
        if alias is not None:
            return getattr(self, alias)
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.labels().items()}

    def labels(self) -> dict[int, str]:
        return self.id2label if self.id2label is not None else {i: f"LABEL_{i}" for i in range(self.num_labels)}

    def validate(self) -> None:
        name = type(self).__name__
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            check_int(name, key, getattr(self, key), minimum=0, optional=True)
        check_int(name, "num_labels", self.num_labels, minimum=0)
        if self.classifier_dropout is not None:
            check_float(name, "classifier_dropout", self.classifier_dropout, low=0.0, high=1.0, high_open=True)
        for key in ("tie_word_embeddings", "use_cache", "output_attentions", "output_hidden_states"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{name}.{key} must be a bool, got {getattr(self, key)!r}")

    # -- reading and writing ------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)} - {"extra"}

    @classmethod
    def check_overrides(cls, overrides: dict[str, Any], where: str, also: tuple[str, ...] = ()) -> None:
        """Refuse keywords that are not fields (nor their generic names): a typo such as
        ``n_layers=6``, or an option this library does not have, must not pass unnoticed."""
        known = cls.field_names() | set(cls.attribute_map)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UnknownArgumentError.naming(unknown, sorted(known | set(also)), where)

    @classmethod
    def from_argument(cls, config: object):
        """A ``config=`` argument as loading takes it: None, this class's config, or a name or path
        to read one from, as they are; transformers' config of the same family converted (its
        ``to_dict()``); anything else refused (a dict, another family's config, which would be read
        as a checkpoint's name or build the wrong model)."""
        if config is None or isinstance(config, (cls, str, os.PathLike)):
            return config
        if not isinstance(config, PretrainedConfig) and callable(getattr(config, "to_dict", None)) \
                and getattr(config, "model_type", None) == cls.model_type:
            return cls.from_dict(config.to_dict())
        if isinstance(config, PretrainedConfig) or getattr(config, "model_type", None) is not None:
            raise InvalidArgumentError(f"config is of type {type(config).__name__} ({getattr(config, 'model_type', '')}); "
                                       f"this model takes a {cls.__name__}")
        raise ArgumentTypeError(f"config must be a {cls.__name__} or a path to its config.json, got "
                                f"{type(config).__name__}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], **overrides: Any) -> PretrainedConfig:
        """Build from a ``config.json`` mapping; unknown keys of the file go to ``extra``; the
        overrides, which must be fields, win."""
        cls.check_overrides(overrides, cls.__name__)
        merged = {**values, **overrides}
        known, extra = {}, dict(merged.pop("extra", {}) or {})
        fields = cls.field_names()
        for key, value in merged.items():
            key = cls.attribute_map.get(key, key)
            if key in fields:
                known[key] = value
            elif key in ("label2id", "model_type"):
                continue  # derived from id2label / fixed by the class
            else:
                extra[key] = value
        labels = known.get("id2label")
        if labels is not None and "num_labels" in known and len(labels) != known["num_labels"]:
            del known["id2label"]  # an explicit num_labels (say, an override) beats the file's labels
        model_type = values.get("model_type")
        if model_type and cls.model_type and model_type != cls.model_type:
            raise ConfigError(f"config has model_type {model_type!r}, but {cls.__name__} reads {cls.model_type!r}")
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "id2label"):
                out[f.name] = getattr(self, f.name)
        out["id2label"] = {str(i): label for i, label in self.labels().items()}
        out["label2id"] = self.label2id
        out["model_type"] = self.model_type
        return {**self.extra, **out}

    def to_diff_dict(self) -> dict[str, Any]:
        """``to_dict`` without the values a default config has (``model_type`` stays)."""
        defaults = type(self)().to_dict()
        return {k: v for k, v in self.to_dict().items() if k == "model_type" or k not in defaults or defaults[k] != v}

    def to_json_string(self, use_diff: bool = False) -> str:
        """The config as JSON: every field (``config.json``), or with ``use_diff`` those that differ
        from a default config."""
        values = self.to_diff_dict() if flag("use_diff", use_diff) else self.to_dict()
        return json.dumps(values, indent=2, sort_keys=True) + "\n"

    def update(self, values: dict[str, Any]) -> None:
        """Set fields (or their generic names) from ``values`` in place, checked as a new config's
        are; other keys are kept in ``extra``, as a ``config.json``'s are."""
        if not isinstance(values, dict):
            raise ArgumentTypeError(f"update takes a dict of config values, got {type(values).__name__}")
        values = dict(values)
        label2id = values.pop("label2id", None)
        if label2id is not None and "id2label" not in values:  # the labels given either way round
            if not isinstance(label2id, dict) or not all(isinstance(i, int) for i in label2id.values()):
                raise ConfigError(f"label2id must map labels to integer ids, got {label2id!r}")
            values["id2label"] = {i: label for label, i in label2id.items()}
        known = self.field_names() | set(self.attribute_map)
        fields = {k: v for k, v in values.items() if k in known}
        current = self.to_dict()
        if "id2label" in fields and "num_labels" not in fields:
            del current["num_labels"]  # new labels set their number
        elif "num_labels" in fields and "id2label" not in fields and fields["num_labels"] != self.num_labels:
            del current["id2label"]  # another number of labels drops the old names
        updated = type(self).from_dict(current, **fields)
        updated.extra.update({k: v for k, v in values.items() if k not in known})
        self.__dict__.update(updated.__dict__)

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        atomic_write(path, self.to_json_string().encode("utf-8"))
        return path

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> PretrainedConfig:
        try:
            with open(path, encoding="utf-8") as f:
                values = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"{path} is not a JSON config file: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path} holds a JSON {type(values).__name__}, not an object of config fields")
        return cls.from_dict(values, **overrides)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> PretrainedConfig:
        """A checkpoint's ``config.json``: a directory holding it, the file itself, or a checkpoint
        name or repository id (downloaded). ``from_preset`` gives a named architecture offline.

        Download options (``cache_dir``, ``revision``, ...) are passed to the download layer; every
        other keyword overrides a config field.
        """
        path = resolve_file(name_or_path, [CONFIG_NAME], **download_options(kwargs))
        config = cls.from_json_file(path, **kwargs)
        config.name_or_path = os.fspath(name_or_path)
        return config

    @classmethod
    def presets(cls) -> dict[str, dict[str, Any]]:
        return {}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PretrainedConfig:
        """The architecture of a published checkpoint (``gpt2-medium``), without the network."""
        if name not in cls.presets():
            raise ConfigError(f"{name!r} is not one of {cls.__name__}'s presets: {', '.join(cls.presets())}")
        return cls.from_dict(cls.presets()[name], **overrides)

    def replace(self, **overrides: Any) -> PretrainedConfig:
        return type(self).from_dict(self.to_dict(), **overrides)
