"""The released RecursiveMAS styles: their Hub repos, the built-in topology each runs as, legacy keys.

>>> sorted(STYLES)
['deliberation', 'distillation', 'mixture', 'sequential_light', 'sequential_scaled']
>>> STYLES["sequential_light"].legacy_keys["outer_31"]
('solver', 'planner')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import RecmasError

__all__ = ["HF_ORG", "RELEASE_TASKS", "INNER_ADAPTER_TYPES", "OUTER_ADAPTER_TYPES", "FORMAT_VERSIONS",
           "CODE_LATENT_STEPS", "ReleaseError", "ReleaseStyle", "STYLES", "get_style", "download_commands"]

HF_ORG = "RecursiveMAS"
#: Tasks the released links were trained for (other prompt tasks use the math links, as the reference does).
RELEASE_TASKS: tuple[str, ...] = ("math", "code")
#: Released ``adapter_type`` strings (and the reference's aliases) -> our link types.
INNER_ADAPTER_TYPES: dict[str, str] = {"ln_res_adapter": "inner_ln_res", "2layer_ln_res": "inner_ln_res"}
OUTER_ADAPTER_TYPES: dict[str, str] = {"outer_ln_res_adapter": "outer_ln_res", "2layer_ln_res": "outer_ln_res"}
FORMAT_VERSIONS = (1,)
CODE_LATENT_STEPS = 16  # reference: code tasks run with m = 16


class ReleaseError(RecmasError):
    """Local copies of the released checkpoints are missing, incomplete or do not fit the style."""



@dataclass(frozen=True)
class ReleaseStyle:
    """One released system: its repos, the built-in topology it runs as and its legacy outer-link keys."""

    name: str
    title: str  # repo-name prefix, e.g. "Sequential-Light"
    paradigm: str  # outerlink_config.json "paradigm"
    variant: str | None  # outerlink_config.json "variant" (sequential styles)
    agent_repos: dict[str, str]  # agent -> repo name (under HF_ORG)
    outer_repo: str
    legacy_keys: dict[str, tuple[str, str]]  # legacy key -> (source agent, target agent)

    @property
    def topology(self) -> str:
        """The built-in topology this release runs as."""
        return self.name

    @property
    def agents(self) -> list[str]:
        """Agent names in the built-in topology's order."""
        return list(self.agent_repos)

    def repo_id(self, agent: str | None = None) -> str:
        """``RecursiveMAS/<repo>`` of an agent, or of the outer links when ``agent`` is None."""
        return f"{HF_ORG}/{self.agent_repos[agent] if agent else self.outer_repo}"

    def key_of(self, source: str, target: str) -> str | None:
        """The legacy key of the edge ``source -> target`` (None when the release has none)."""
        for key, pair in self.legacy_keys.items():
            if pair == (source, target):
                return key
        return None


def _style(name: str, title: str, paradigm: str, variant: str | None, agents: dict[str, str],
           keys: dict[str, tuple[str, str]]) -> ReleaseStyle:
    return ReleaseStyle(name, title, paradigm, variant, agents, f"{title}-Outerlinks", keys)


_SEQUENTIAL_KEYS = {"outer_12": ("planner", "critic"), "outer_23": ("critic", "solver"),
                    "outer_31": ("solver", "planner")}

#: The five released styles (repo names as published under https://huggingface.co/RecursiveMAS).
STYLES: dict[str, ReleaseStyle] = {
    s.name: s
    for s in (
        _style("sequential_light", "Sequential-Light", "sequential", "light",
               {"planner": "Sequential-Light-Planner-Qwen3-1.7B", "critic": "Sequential-Light-Critic-Llama3.2-1B",
                "solver": "Sequential-Light-Solver-Qwen2.5-Math-1.5B"}, _SEQUENTIAL_KEYS),
        _style("sequential_scaled", "Sequential-Scaled", "sequential", "scaled",
               {"planner": "Sequential-Scaled-Planner-Gemma3-4B", "critic": "Sequential-Scaled-Critic-Llama3.2-3B",
                "solver": "Sequential-Scaled-Solver-Qwen3.5-4B"}, _SEQUENTIAL_KEYS),
        _style("mixture", "Mixture", "mixture", None,
               {"math": "Mixture-Math-DeepSeek-R1-Distill-Qwen-1.5B", "code": "Mixture-Code-Qwen2.5-Coder-3B",
                "science": "Mixture-Science-BioMistral-7B", "summarizer": "Mixture-Summarizer-Qwen3.5-2B"},
               {"outer_1s": ("math", "summarizer"), "outer_2s": ("code", "summarizer"),
                "outer_3s": ("science", "summarizer"), "outer_s1": ("summarizer", "math"),
                "outer_s2": ("summarizer", "code"), "outer_s3": ("summarizer", "science")}),
        _style("distillation", "Distillation", "distillation", None,
               {"expert": "Distillation-Expert-Qwen3.5-9B", "learner": "Distillation-Learner-Qwen3.5-4B"},
               {"outer_el": ("expert", "learner"), "outer_le": ("learner", "expert")}),
        _style("deliberation", "Deliberation", "deliberation", None,
               {"reflector": "Deliberation-Reflector-Qwen3.5-4B", "toolcaller": "Deliberation-Toolcaller-Qwen3.5-4B"},
               {"outer_rt": ("reflector", "toolcaller"), "outer_tr": ("toolcaller", "reflector")}),
    )
}


def get_style(name: str) -> ReleaseStyle:
    """The released style called ``name`` (``-`` and case are forgiven: ``Sequential-Light`` works)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in STYLES:
        raise ReleaseError(f"unknown released style {name!r}", culprit="style",
                           hint=f"use one of: {', '.join(STYLES)}")
    return STYLES[key]


def download_commands(style: str | ReleaseStyle, root: str | Path = "releases") -> list[str]:
    """``hf download`` commands that put a style's repos where :func:`import_release` finds them.

    >>> download_commands("distillation", "rel")[-1]
    'hf download RecursiveMAS/Distillation-Outerlinks --local-dir rel/Distillation-Outerlinks'
    """
    s = style if isinstance(style, ReleaseStyle) else get_style(style)
    repos = [*s.agent_repos.values(), s.outer_repo]
    return [f"hf download {HF_ORG}/{repo} --local-dir {Path(root) / repo}" for repo in repos]
