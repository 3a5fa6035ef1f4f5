"""An lm-evaluation-harness model adapter: score a RecursiveMAS system on lm-eval tasks.

Importing this module registers the model name ``recmas`` with lm-eval (extra ``lmeval``)::

    recmas-lm-eval --model recmas --model_args topology=sequential_light_mini --tasks gsm8k --limit 20
    recmas-lm-eval --model recmas --model_args topology=sequential_light_mini --tasks recmas_arc_easy

``recmas-lm-eval`` is lm-eval's own command line with the adapter registered first (lm-eval 0.4
finds models only in its own source tree, so a bare ``lm_eval --model recmas`` cannot see it) and
the task configs shipped here (:data:`TASKS_DIR`: ``recmas_arc_easy``, ``recmas_arc_challenge``,
lm-eval's ARC tasks on the packaged data, offline) on its task path. In Python, pass the model to
``lm_eval.simple_evaluate(model="recmas", ..., task_manager=task_manager())`` after importing this
module, or pass a :class:`RecmasLM` instance.

Each request's context (the task's prompt, few-shot examples included) is the question the
system is asked: every agent's role template receives it as ``question`` for ``task`` (default
``math``) and the system thinks for its rounds.

- ``generate_until``: the output agent's answer is the response, cut at the first of the
  request's ``until`` strings as lm-eval's own backends do. Requests are grouped by generation
  options and run ``batch_size`` at a time; request ``i`` (its position in lm-eval's list) samples
  with seed ``seed + i``.
- ``loglikelihood`` (multiple-choice tasks): requests are grouped by context, the rounds run once
  per context, and each continuation is teacher-forced after the output agent's final prompt
  (:meth:`~recmas_graph.runtime.RecursiveSystem.score`); for a one-agent system whose role is
  rendered bare (tag ``raw``) these are the log-likelihoods lm-eval's ``hf`` model gives.
- ``loglikelihood_rolling`` (perplexity) is refused: a system has a next-token distribution only
  after its rounds on a question, and a rolling request has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import lm_eval.models  # noqa: F401  (fills lm-eval's registry first: an early registration would hide it)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
    from lm_eval.tasks import TaskManager
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the lm-eval adapter needs lm-evaluation-harness: pip install 'recmas-graph[lmeval]'") from exc

import torch
from tqdm.auto import tqdm

from ..errors import RunError
from ..runtime.options import RunOptions

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["RecmasLM", "TASKS_DIR", "task_manager"]

#: lm-eval task configs shipped with recmas (lm-eval's ARC tasks on the packaged data, offline).
TASKS_DIR = Path(__file__).resolve().parent / "lmeval_tasks"


def task_manager(include_path: str | Path | Sequence[str | Path] | None = None, **kwargs: Any) -> Any:
    """lm-eval's ``TaskManager`` with :data:`TASKS_DIR` on its path (before ``include_path``, so a
    folder of your own may override a task of ours); ``kwargs`` go to ``TaskManager``."""
    extra = [] if include_path is None else ([include_path] if isinstance(include_path, (str, Path)) else
                                             list(include_path))
    return TaskManager(include_path=[str(TASKS_DIR), *map(str, extra)], **kwargs)


#: lm-eval generation options the adapter understands (others are refused by name).
_KNOWN_GEN_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "min_p",
                     "repetition_penalty"}


@register_model("recmas")
class RecmasLM(LM):
    """A RecursiveMAS system as an lm-eval model.

    Model arguments (``--model_args k=v,...``): ``topology`` (a built-in name or a JSON path),
    ``models`` (``tiny``: every agent's tiny random model), ``baseline`` (``single`` or ``text``: score the
    topology's baseline instead), ``task`` (prompt set, default ``math``), ``rounds``,
    ``latent_steps``, ``text_message_tokens``, ``seed``, ``dtype``; lm-eval's ``batch_size`` and
    ``device`` too (a CUDA device on a machine without one falls back to the CPU, as lm-eval's HF
    backend does, since lm-eval's CLI always passes ``cuda:0``). ``system`` (Python only) takes an already built
    :class:`~recmas_graph.runtime.RecursiveSystem`.
    """

    def __init__(
        self,
        topology: str | None = None,
        *,
        system: RecursiveSystem | None = None,
        models: str | None = None,
        baseline: str | None = None,
        task: str = "math",
        rounds: int | None = None,
        latent_steps: int | None = None,
        text_message_tokens: int = 256,
        seed: int = 0,
        dtype: str | None = None,
        device: str | None = None,
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        max_gen_toks: int = 256,
    ) -> None:
        super().__init__()
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            device = None  # lm-eval's CLI always passes cuda:0; like its HF backend, fall back to the CPU
        if system is None:
            if not topology:
                raise RunError("the recmas lm-eval model needs a topology",
                               culprit="--model_args", hint="e.g. --model_args topology=sequential_light_mini")
            system = self._build(str(topology), models=models, baseline=baseline, dtype=dtype, device=device,
                                 seed=seed)
        elif baseline is not None:
            raise RunError("baseline= needs topology=, not a built system", culprit="baseline",
                           hint="build the baseline yourself: recmas_graph.eval.baselines.baseline(spec, name)")
        self.system = system
        #: How the system runs every request (decoding comes from each request's gen_kwargs).
        self.options = RunOptions(task=task, rounds=rounds, latent_steps=latent_steps,
                                  text_message_tokens=text_message_tokens, seed=seed)
        self.max_gen_toks = int(max_gen_toks)
        if str(batch_size).startswith("auto"):
            batch_size = max_batch_size or 8  # no memory probing: a fixed batch within the asked maximum
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise RunError(f"batch_size must be at least 1, got {batch_size}", culprit="--batch_size")

    @staticmethod
    def _build(topology: str, *, models: str | None, baseline: str | None, dtype: str | None,
               device: str | None, seed: int) -> Any:
        from ..plugins.manager import default_registry
        from ..topology.compile import compile_topology
        from .baselines import BASELINES
        from .baselines import baseline as make_baseline

        registry = default_registry()
        compiled = registry.compile(topology)
        if baseline is not None:
            if baseline not in BASELINES:
                raise RunError(f"unknown baseline {baseline!r}", culprit="baseline",
                               hint=f"use one of: {', '.join(BASELINES)}")
            # compiled against the topology's folder, so relative link weights keep working
            compiled = compile_topology(make_baseline(compiled.spec, baseline), registry, base_dir=compiled.base_dir)
        return compiled.build(models=models, dtype=dtype, device=device, seed=seed)

    # ------------------------------------------------------------------ lm-eval API
    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        """Answer each ``(context, gen_kwargs)`` request with the system's final answer."""
        outputs: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            context, gen_kwargs = request.args
            groups.setdefault(repr(sorted(gen_kwargs.items())), []).append(i)
        bar = tqdm(total=len(requests), desc="recmas generate_until", disable=disable_tqdm or self.rank != 0)
        for indices in groups.values():
            gen_kwargs = requests[indices[0]].args[1]
            until, options = self._generation(gen_kwargs)
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                contexts = [requests[i].args[0] for i in chunk]
                result = self.system.run(contexts, self.options, seeds=[(self.options.seed or 0) + i for i in chunk],
                                         **options)
                for i, answer in zip(chunk, result.answers):
                    text = _cut(answer, until)
                    outputs[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                bar.update(len(chunk))
        bar.close()
        return [text or "" for text in outputs]

    def _generation(self, gen_kwargs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """lm-eval's generation options as ``system.run`` keywords, and the stop strings."""
        unknown = sorted(set(gen_kwargs) - _KNOWN_GEN_KWARGS - {"max_new_tokens", "max_tokens"})
        if unknown:
            raise RunError(f"the task asks for generation option(s) {', '.join(unknown)}, which recmas does not "
                           "support", culprit="generation_kwargs",
                           hint=f"supported: {', '.join(sorted(_KNOWN_GEN_KWARGS))}")
        kwargs = dict(normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks))
        until = handle_stop_sequences(kwargs.pop("until", None), eos=None)
        options: dict[str, Any] = {"max_new_tokens": int(kwargs.pop("max_gen_toks")), "stop": tuple(until)}
        if not kwargs.pop("do_sample", False):
            options["greedy"] = True
            kwargs.pop("temperature", None)
        options.update({k: v for k, v in kwargs.items() if v is not None})
        return until, options

    def loglikelihood(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """Score each ``(context, continuation)`` request: ``(sum of log-probabilities, is_greedy)``.

        Requests are grouped by context: a context is one question to the system, whose rounds run
        once; all its continuations (the options of a multiple-choice question) are scored after the
        output agent's final prompt (:meth:`~recmas_graph.runtime.RecursiveSystem.score`).
        Contexts run ``batch_size`` at a time.
        """
        outputs: list[tuple[float, bool] | None] = [None] * len(requests)
        by_context: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            context, _ = request.args
            by_context.setdefault(context, []).append(i)
        contexts = list(by_context)
        bar = tqdm(total=len(requests), desc="recmas loglikelihood", disable=disable_tqdm or self.rank != 0)
        for start in range(0, len(contexts), self.batch_size):
            chunk = contexts[start:start + self.batch_size]
            continuations = [[requests[i].args[1] for i in by_context[c]] for c in chunk]
            result = self.system.score(chunk, continuations, self.options)
            for context, scores in zip(chunk, result.scores):
                for i, score in zip(by_context[context], scores):
                    outputs[i] = (score.logprob, score.greedy)
                    self.cache_hook.add_partial("loglikelihood", requests[i].args, outputs[i])
                bar.update(len(by_context[context]))
        bar.close()
        return [out if out is not None else (float("-inf"), False) for out in outputs]

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        raise RunError(
            "loglikelihood_rolling (perplexity) tasks are not defined for a RecursiveMAS system: its output agent "
            "has a next-token distribution only after the rounds it runs on a question, and a rolling request is "
            "a text with no question", culprit="--tasks",
            hint="use a multiple_choice (loglikelihood) or generate_until task")

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results."""
        return {"recmas_topology": self.system.spec.name, "recmas_task": self.options.task,
                "recmas_build": dict(getattr(self.system, "build_options", {}))}


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string (lm-eval's convention)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text
