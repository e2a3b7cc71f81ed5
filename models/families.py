"""The model registry: which family a checkpoint belongs to, decided from its config alone.

Three families share one interface (``encode_image`` / ``encode_text`` -> ``GaussianEmbedding``
with ``logvar`` None for deterministic models, ``pair_logit()`` -> ``models.gaussian.PairLogit``,
``embed_dim``, ``image_size``, ``context_length``, ``config.to_dict()``):

============  ==========================================================  ==================
family        marker in ``config.json`` (``vision_cfg`` or ``text_cfg``)   embeddings
============  ==========================================================  ==================
``pcmepp``    ``unc_layers`` (the depth of a separate uncertainty branch)  Gaussians
``prolip``    ``embed_unc`` (an [UNC] token in the tower)                  Gaussians
``clip``      neither                                                      points (no logvar)
============  ==========================================================  ==================

The rule, in that order, is the whole detection: no loader is tried "to see if it works"
(STYLE.md, "Family detection is data"). Every released checkpoint of each family carries its
marker; a config that lacks it (a hand-written ProLIP config without ``embed_unc``) is read as
the next family down and fails there with an error naming its unexpected fields, and an
explicit ``family=`` overrides the rule.
"""

from __future__ import annotations

from typing import Any

FAMILIES = ("prolip", "pcmepp", "clip")
DETERMINISTIC = {"prolip": False, "pcmepp": False, "clip": True}


def detect_family(raw: dict[str, Any]) -> str:
    """The family of a model config (a released ``config.json`` as a dict); see the module docstring."""
    if not isinstance(raw, dict):
        raise ValueError(f"a model config is a JSON object, not {type(raw).__name__}")
    sections = [raw.get(name) for name in ("vision_cfg", "text_cfg")]
    keys = set().union(*(section for section in sections if isinstance(section, dict)))
    if "unc_layers" in keys:
        return "pcmepp"
    if "embed_unc" in keys:
        return "prolip"
    return "clip"


def check_family(family: str | None) -> str | None:
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {', '.join(FAMILIES)}")
    return family


def config_from_dict(raw: dict[str, Any], family: str | None = None):
    """The typed config of ``raw`` for ``family`` (default: ``detect_family``)."""
    family = check_family(family) or detect_family(raw)
    if family == "prolip":
        from .config import ModelConfig as kind
    elif family == "pcmepp":
        from .pcmepp import PCMEPPConfig as kind
    else:
        from .clip import CLIPConfig as kind
    try:
        return kind.from_dict(raw)
    except ValueError as error:
        raise ValueError(f"{error} (read as a {family} config: {_why(raw, family)})") from None


def _why(raw: dict[str, Any], family: str) -> str:
    detected = detect_family(raw) if isinstance(raw, dict) else None
    if detected != family:
        return f"family={family!r} was asked for"
    return {"pcmepp": "its towers have unc_layers", "prolip": "its towers have embed_unc",
            "clip": "its towers have neither embed_unc nor unc_layers; pass family= if it is another family"}[family]


def build_model(config: Any):
    """A model with fresh weights for a typed config of any family."""
    if config.family == "prolip":
        from .architecture import ProLIP

        return ProLIP(config)
    if config.family == "pcmepp":
        from .pcmepp import PCMEPP

        return PCMEPP(config)
    from .clip import CLIP

    return CLIP(config)
