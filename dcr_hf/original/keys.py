"""The original implementation's parameter names and ours, for each kind of trunk it trained.

A `KeyRule` pairs one original name template with one of ours and renames both ways (so keys
the checkpoint lacks are reported under the original's names). Fields: `{stage}` (the original
counts stages from 1, we from 0), `{block}` (shifted by the kind's `block_offset`: the paper-style
trunk's stage is Sequential(conv, max-pool, block, ...), so its blocks start at index 2), `{k}`
(a branch) and `{param}` (a parameter or buffer name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_FIELDS = {"stage": r"(?P<stage>\d+)", "block": r"(?P<block>\d+)", "k": r"(?P<k>\d+)", "param": r"(?P<param>[a-z_]+)"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    return re.compile("".join(re.escape(p) if i % 2 == 0 else _FIELDS[p] for i, p in enumerate(parts)))


@dataclass(frozen=True)
class KeyRule:
    original: str
    ours: str
    _patterns: tuple[re.Pattern, re.Pattern] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_patterns", (_compile(self.original), _compile(self.ours)))

    def rename(self, key: str, to_ours: bool, block_offset: int) -> str | None:
        """The other side's name of `key`, or `None` when this rule does not describe it."""
        match = self._patterns[0 if to_ours else 1].fullmatch(key)
        if match is None:
            return None
        values = match.groupdict()
        sign = 1 if to_ours else -1
        if "stage" in values:
            values["stage"] = int(values["stage"]) - sign
            if values["stage"] < 0:
                return None
        if "block" in values:
            values["block"] = int(values["block"]) - sign * block_offset
            if values["block"] < 0:
                return None
        return (self.ours if to_ours else self.original).format(**values)


_STEM, _BLOCK = "dcr.trunk.embedder.embedder", "dcr.trunk.stages.{stage}.layers.{block}"
_HEAD_RULES = (
    KeyRule("trunk.fc1.{param}", "dcr.trunk.projection.{param}"),
    KeyRule("trunk.fc2.{param}", "classifier.{param}"),
)
#: The branches, the same for every trunk kind: fc1 = coupled embedding, relu (PReLU) + fc2 = classifier.
BRANCH_RULES = (
    KeyRule("branches.{k}.fc1.{param}", "dcr.branches.{k}.projection.{param}"),
    KeyRule("branches.{k}.relu.weight", "branch_classifiers.{k}.activation.weight"),
    KeyRule("branches.{k}.fc2.{param}", "branch_classifiers.{k}.classifier.{param}"),
)


def _resnet_rules(prefix: str, convolutions: int) -> tuple[KeyRule, ...]:
    """torchvision's ResNet layout under `prefix`: conv1/bn1, layer{s}.{b}.conv{i}/bn{i}, downsample.0/1."""
    rules = [KeyRule(f"{prefix}conv1.weight", f"{_STEM}.convolution.weight"),
             KeyRule(f"{prefix}bn1.{{param}}", f"{_STEM}.normalization.{{param}}")]
    for i in range(1, convolutions + 1):
        rules += [KeyRule(f"{prefix}layer{{stage}}.{{block}}.conv{i}.weight", f"{_BLOCK}.layer.{i - 1}.convolution.weight"),
                  KeyRule(f"{prefix}layer{{stage}}.{{block}}.bn{i}.{{param}}", f"{_BLOCK}.layer.{i - 1}.normalization.{{param}}")]
    rules += [KeyRule(f"{prefix}layer{{stage}}.{{block}}.downsample.0.weight", f"{_BLOCK}.shortcut.convolution.weight"),
              KeyRule(f"{prefix}layer{{stage}}.{{block}}.downsample.1.{{param}}", f"{_BLOCK}.shortcut.normalization.{{param}}")]
    return (*rules, *_HEAD_RULES)


_PAPER_RULES = (
    KeyRule("trunk.conv1.weight", f"{_STEM}.convolution.weight"),
    KeyRule("trunk.bn1.{param}", f"{_STEM}.normalization.{{param}}"),
    KeyRule("trunk.relu.weight", f"{_STEM}.activation.weight"),
    KeyRule("trunk.layer{stage}.0.weight", "dcr.trunk.stages.{stage}.downsample.0.weight"),
    KeyRule("trunk.layer{stage}.{block}.conv1.weight", f"{_BLOCK}.layer.0.convolution.weight"),
    KeyRule("trunk.layer{stage}.{block}.bn1.{param}", f"{_BLOCK}.layer.0.normalization.{{param}}"),
    KeyRule("trunk.layer{stage}.{block}.relu1.weight", f"{_BLOCK}.layer.0.activation.weight"),
    KeyRule("trunk.layer{stage}.{block}.conv2.weight", f"{_BLOCK}.layer.1.convolution.weight"),
    KeyRule("trunk.layer{stage}.{block}.bn2.{param}", f"{_BLOCK}.layer.1.normalization.{{param}}"),
    KeyRule("trunk.layer{stage}.{block}.relu2.weight", f"{_BLOCK}.activation.weight"),
    *_HEAD_RULES,
)


@dataclass(frozen=True)
class TrunkKind:
    """One kind of trunk the original trains: its `backbone` names, key prefix and rules."""

    name: str
    backbones: tuple[str, ...]
    prefix: str  # where the convolutional body's keys live
    trunk_type: str  # our `DCRConfig.trunk_type`
    rules: tuple[KeyRule, ...]
    block_offset: int = 0

    def to_ours(self, key: str) -> str | None:
        """Our name of an original key, `None` when it is no parameter of this trunk or a branch."""
        for rule in (*self.rules, *BRANCH_RULES):
            renamed = rule.rename(key, True, self.block_offset)
            if renamed is not None:
                return renamed
        return None

    def to_original(self, key: str) -> str:
        """The original's name of one of our keys (the key itself when no rule knows it)."""
        for rule in (*self.rules, *BRANCH_RULES):
            renamed = rule.rename(key, False, self.block_offset)
            if renamed is not None:
                return renamed
        return key


RESNET_STYLE = TrunkKind("DCRTrunk (resnet-style)", ("DCRTrunk",), "trunk.", "resnet", _resnet_rules("trunk.", 2))
PAPER_STYLE = TrunkKind("NewDCRTrunk (paper-style)", ("NewDCRTrunk",), "trunk.", "paper", _PAPER_RULES, block_offset=2)
TORCHVISION_RESNET = TrunkKind(
    "ResNet-N (torchvision body)",
    ("ResNet-18", "ResNet-34", "ResNet-50", "ResNet-101", "ResNet-152"),
    "trunk.body.",
    "resnet",
    _resnet_rules("trunk.body.", 3),  # Bottleneck blocks add conv3/bn3
)
TRUNK_KINDS = (RESNET_STYLE, PAPER_STYLE, TORCHVISION_RESNET)


def kind_of_backbone(backbone: str) -> TrunkKind:
    """The trunk kind a `config.json` `backbone` value names (the value is checked when read)."""
    return next(kind for kind in TRUNK_KINDS if backbone in kind.backbones)


__all__ = ["BRANCH_RULES", "PAPER_STYLE", "RESNET_STYLE", "TORCHVISION_RESNET", "TRUNK_KINDS", "KeyRule", "TrunkKind",
           "kind_of_backbone"]
