"""The Ray backend: a system's agents in Ray actors, its passes run where their models are.

:func:`build_on_ray` groups the agents by (model, device) as an in-process build shares models,
starts one :class:`AgentHost` actor per group (with a GPU when the group is placed on one), and
builds the links in three steps so that every process holds exactly the links an in-process build
makes: each actor loads its models and reports their :class:`~recmas_graph.runtime.links.ModelFacts`;
each builds every link from those facts under the build's seed and returns the ones it owns (its
agents' inner links, the outer links into its agents); the caller merges them and hands the whole
set to every actor. The returned :class:`~recmas_graph.runtime.RecursiveSystem` holds the links
but no model; its :class:`RayRunner` sends each scheduled pass (plain tensors and strings) to the
actor of its agent, the passes of a wave at once, and the executor, the schedule and the message
store are the in-process ones.

Training (``answer_loss``) needs autograd across the whole unrolled run, so it stays in process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import RecmasError, RunError
from ..runtime.execution.backends import InProcessRunner, PassRequest, PassResult, RunSettings
from ..runtime.agent.decoding import GenerationOptions
from ..runtime.links.assemble import ModelFacts, build_system_links, self_fitting_links
from ..runtime.memory.oom import OutOfMemory, free_cached_memory
from ..topology.compile import CompiledTopology
from ..topology.spec import dump_topology
from .cluster import connect, require_ray, worker_setup
from .shipping import ShippedRegistry, ship_registry

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..runtime.system import RecursiveSystem

__all__ = ["AgentHost", "RayRunner", "build_on_ray", "host_groups", "check_gpus", "unwrap"]


def _compile(spec_json: str, base_dir: str | None, shipped: ShippedRegistry) -> CompiledTopology:
    """The topology again, in a worker: the spec, the folder its relative paths start from, and the
    caller's registry rebuilt (its own plugins included)."""
    from ..topology.compile import compile_topology
    from ..topology.spec import parse_topology

    return compile_topology(parse_topology(json.loads(spec_json)), shipped.rebuild(), base_dir=base_dir)


class AgentHost:
    """Ray actor body: the agents of a system placed on one device (a GPU), or sharing one model on
    the CPU, and all the system's links. ``labels[agent]`` is the agent's device as placed (traces
    and errors name it, not the actor's own ``cuda:0``)."""

    def __init__(self, spec_json: str, base_dir: str | None, agents: Sequence[str], device: str,
                 dtype: str | None, threads: int = 1, labels: Mapping[str, str] | None = None,
                 shipped: ShippedRegistry = ShippedRegistry()) -> None:
        self.error: BaseException | None = None
        self.names = list(agents)
        self.device = device
        self.dtype = dtype
        self.labels = dict(labels or {})
        self.system: RecursiveSystem | None = None
        self.runner: InProcessRunner | None = None
        self._loaded: dict[str, Any] = {}
        self._agents: dict[str, Any] = {}
        try:  # an actor whose constructor raises dies with a garbled message: keep the error for load()
            worker_setup(threads)
            self.compiled = _compile(spec_json, base_dir, shipped)
        except Exception as err:  # noqa: BLE001 - re-raised by load()
            self.error = err

    def load(self) -> dict[str, ModelFacts]:
        """Load this host's models and make its agents; what the links need to know of them."""
        from ..runtime.sources.loaded import ModelCache
        from ..runtime.system import make_agent

        if self.error is not None:
            raise self.error
        spec, catalog = self.compiled.spec, self.compiled.catalog
        cache = ModelCache(catalog.model_sources)
        hooks = getattr(catalog, "hooks", None)
        facts = {}
        for name in self.names:
            a = spec.agent(name)
            lm = self._loaded[name] = cache.get(a.model, device=self.device, dtype=a.dtype or self.dtype,
                                                sources=catalog.model_sources)
            self._agents[name] = make_agent(a, lm, catalog)
            facts[name] = ModelFacts.of(lm)
            if hooks is not None:
                hooks.recmas_agent_built(agent=self._agents[name])
        return facts

    def build_links(self, facts: Mapping[str, ModelFacts], seed: int, threads: int) -> dict[str, torch.Tensor]:
        """Build every link from ``facts``; return the state of the links this host owns (on the CPU).

        They are built with the caller's ``threads`` (an orthogonal init's QR rounds by thread
        count), so on the same kind of machine they equal an in-process build's to the bit.
        """
        from ..runtime.system import RecursiveSystem

        devices = {name: agent.device for name, agent in self._agents.items()}
        working = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            inner, outer = build_system_links(self.compiled, facts, seed=seed, devices=devices, models=self._loaded,
                                              own=self.names)
        finally:
            torch.set_num_threads(working)
        system = RecursiveSystem(self.compiled, self._agents, inner, outer,
                                 hooks=getattr(self.compiled.catalog, "hooks", None))
        system.model_facts = dict(facts)
        self.system, self.runner = system, InProcessRunner(system)
        owned = {f"inner_links.{n}." for n in self.names} | {
            f"outer_links.{e}." for e, edge in self.compiled.edges.items() if edge.target in self.names}
        return {k: v.detach().cpu() for k, v in system.state_dict().items() if any(k.startswith(p) for p in owned)}

    def _built(self) -> tuple[RecursiveSystem, InProcessRunner]:
        """This host's system and runner (:meth:`build` has run)."""
        if self.system is None or self.runner is None:
            raise RunError("this Ray agent host has not built its agents yet", culprit="AgentHost",
                           hint="call build() first (RayRunner does)")
        return self.system, self.runner

    def load_links(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take the merged links (every process then holds the same ones)."""
        self._built()[0].load_state_dict(dict(state))

    def run_pass(self, request: PassRequest) -> PassResult:
        """Run one pass here; its messages come back on the CPU."""
        try:
            with torch.inference_mode():
                result = self._built()[1].run_pass(request)
        except OutOfMemory as err:
            free_cached_memory()  # give this actor's memory back before a smaller retry
            label = self.labels.get(request.step.agent, err.device)
            raise OutOfMemory(err.message.replace(f"on {err.device}", f"on {label}"), agent=err.agent,
                              round=err.round, device=label, batch_size=err.batch_size, hint=err.hint) from None
        result.record.device = self.labels.get(request.step.agent, result.record.device)
        result.messages = {k: v if isinstance(v, list) else v.cpu() for k, v in result.messages.items()}
        if result.thoughts is not None:
            result.thoughts = result.thoughts.cpu()
        return result

    def continue_texts(self, agent: str, texts: Sequence[str], options: GenerationOptions, seeds: Sequence[int],
                       stream: int) -> list[str]:
        """The retry's continuation, with this host's model."""
        return self._built()[1].continue_texts(agent, texts, options, seeds=seeds, stream=stream)

    def begin_run(self, settings: RunSettings) -> None:
        """A run starts: keep its prompt prefixes here (the passes of its agents reuse them)."""
        self._built()[1].begin_run(settings)

    def end_run(self) -> int:
        """The run ended: free its prefixes; how many prompt positions they saved."""
        runner = self._built()[1]
        runner.end_run()
        return runner.reused_tokens


#: How long the end of a run waits for the actors to free their prompt prefixes.
END_RUN_TIMEOUT_S = 10.0


class RayRunner:
    """A pass runner sending each pass to the Ray actor of its agent (``hosts[agent]``)."""

    def __init__(self, hosts: Mapping[str, Any]) -> None:
        self.hosts = dict(hosts)
        #: Prompt positions the last run did not recompute (prefix reuse in the actors).
        self.reused_tokens = 0

    def begin_run(self, settings: RunSettings) -> None:
        """Tell every actor a run starts (an actor runs its calls in order, so no wait is needed)."""
        for host in set(self.hosts.values()):
            host.begin_run.remote(settings)

    def end_run(self) -> None:
        """Tell every actor the run ended. Runs while an error may be on its way out, so a dead or
        still busy actor is not waited for long nor reported here (the error that ended the run is)."""
        ray = require_ray()
        try:
            ends = [host.end_run.remote() for host in set(self.hosts.values())]
            self.reused_tokens = sum(ray.get(ends, timeout=END_RUN_TIMEOUT_S))
        except Exception:  # noqa: BLE001 - cleanup after the run; the run's own outcome stands
            self.reused_tokens = 0

    def run_pass(self, request: PassRequest) -> PassResult:
        """Run one pass on its agent's actor."""
        return self.run_wave([request])[0]

    def run_wave(self, requests: Sequence[PassRequest]) -> list[PassResult]:
        """Send every pass of a wave at once (actors run concurrently); the results in order."""
        ray = require_ray()
        for r in requests:
            if r.settings.targets is not None or r.settings.agent_targets:
                raise RunError("losses (training) need autograd through the whole run, in one process",
                               culprit="--backend ray", hint="train with the in-process backend (--backend local)")
        start = time.perf_counter()
        refs = [self.hosts[r.step.agent].run_pass.remote(r) for r in requests]
        results = [_get(ray, ref, r.step.agent) for ref, r in zip(refs, requests)]
        for result in results:
            result.record.start_s = start  # the actors' clocks are not this process's
        return results

    def continue_texts(self, agent: str, texts: Sequence[str], options: GenerationOptions, *,
                       seeds: Sequence[int], stream: int) -> list[str]:
        """The retry's continuation on the actor of ``agent``."""
        ray = require_ray()
        return _get(ray, self.hosts[agent].continue_texts.remote(agent, list(texts), options, list(seeds), stream),
                    agent)

    def shutdown(self) -> None:
        """Stop the actors (their models are freed)."""
        ray = require_ray()
        for host in set(self.hosts.values()):
            ray.kill(host)


def unwrap(ray: Any, err: BaseException) -> BaseException:
    """The recmas error a Ray task raised (Ray wraps it with its traceback), else ``err`` itself:
    ``raise unwrap(ray, err) from None``."""
    cause = getattr(err, "cause", None) if isinstance(err, ray.exceptions.RayTaskError) else None
    return cause if isinstance(cause, RecmasError) else err


def _get(ray: Any, ref: Any, agent: str) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as err:
        raise RunError(f"the Ray actor holding agent {agent!r} died: {str(err).splitlines()[0]}",
                       culprit=f"agent {agent!r}",
                       hint="see the Ray logs (ray logs / /tmp/ray/session_latest/logs); out of memory? "
                            "try a smaller --batch-size") from None
    except ray.exceptions.RayTaskError as err:
        raise unwrap(ray, err) from None


def _all(ray: Any, refs: Sequence[Any]) -> list[Any]:
    """``ray.get`` of every ref, a recmas error raised in an actor re-raised as itself."""
    try:
        return ray.get(list(refs))
    except ray.exceptions.RayTaskError as err:
        raise unwrap(ray, err) from None
    except ray.exceptions.RayActorError as err:
        raise RunError(f"a Ray actor died while the system was built: {str(err).splitlines()[0]}",
                       culprit="--backend ray", hint="see the Ray logs (/tmp/ray/session_latest/logs)") from None


def host_groups(compiled: CompiledTopology, placement: Mapping[str, str],
                dtype: str | None) -> list[tuple[list[str], str, str | None]]:
    """The actors of a system, ``(agents, device, dtype)`` each, in declaration order: one per GPU
    (holding every agent placed there, each distinct model once), and on the CPU one per distinct
    model and dtype (as an in-process build shares them)."""
    from ..runtime.sources.loaded import ModelCache

    groups: dict[tuple[str, ...], tuple[list[str], str, str | None]] = {}
    for a in compiled.spec.agents:
        device, dt = placement[a.name], a.dtype or dtype
        if device.startswith("cuda"):
            device = "cuda:0" if device == "cuda" else device
            key: tuple[str, ...] = (device,)
        else:
            key = ModelCache.key(a.model, "cpu", dt)
        groups.setdefault(key, ([], device, dt))[0].append(a.name)
    return list(groups.values())


def check_gpus(groups: Sequence[tuple[list[str], str, str | None]], gpus: int) -> None:
    """Refuse GPU actors the cluster cannot hold (each reserves one GPU; waiting would hang)."""
    labels = [device for _, device, _ in groups if device.startswith("cuda")]
    beyond = [d for d in labels if ":" in d and int(d.split(":")[1]) >= gpus]
    if len(labels) > gpus or beyond:
        agents = [n for names, device, _ in groups if device in (beyond or labels) for n in names]
        raise RunError(f"{len(labels)} GPU(s) asked for ({', '.join(labels)}), the Ray cluster has {gpus}",
                       culprit="--device", hint=f"agents {', '.join(agents)}: place them on cuda:0-{max(gpus - 1, 0)} "
                                                "or the CPU, or join a cluster with more GPUs")


def build_on_ray(compiled: CompiledTopology, *, models: str | None = None, model: Mapping[str, str] | None = None,
                 device: str | Mapping[str, str] | None = None, dtype: str | None = None, seed: int = 0,
                 address: str | None = None, cpus_per_actor: int | None = None, on_model: Any = None,
                 placement: str | None = None) -> Any:
    """Build ``compiled`` with its agents in Ray actors (see the module docs); options as
    :meth:`RecursiveSystem.build`. ``address`` picks the cluster (:func:`~.cluster.connect`).
    ``cpus_per_actor``: the CPUs each CPU actor reserves and its torch threads (default: it
    reserves none, as Ray's actors do, so a system has more actors than the cluster has CPUs,
    and runs one thread). A GPU actor reserves one GPU."""
    from ..runtime.memory.placement import resolve_placement
    from ..runtime.system import RecursiveSystem, with_models

    ray = connect(address)
    compiled = with_models(compiled, models, model)
    hooks = getattr(compiled.catalog, "hooks", None)
    if hooks is not None:  # the plugins' checks, as for an in-process build (recmas_system_built is not run here)
        hooks.recmas_check_build(compiled=compiled, registry=compiled.catalog)
    spec = compiled.spec
    calibrated = [a.name for a in spec.agents if a.inner_link.calibration_corpus] + [
        e.label for e in spec.edges if e.link.calibration_corpus]
    if calibrated:
        raise RunError(f"links calibrated on first use ({', '.join(calibrated)}) are fitted in one process",
                       culprit="--backend ray", hint="run once in process (or recmas calibrate) and point the "
                                                     "links' weights at the files, or use --workers")
    gpus = int(ray.cluster_resources().get("GPU", 0))
    where = resolve_placement(spec, device, gpus=gpus, placement=placement, sources=compiled.catalog.model_sources,
                              dtype=dtype)
    groups = host_groups(compiled, where, dtype)
    check_gpus(groups, gpus)
    home = {name: i for i, (names, _, _) in enumerate(groups) for name in names}
    for link, agents in self_fitting_links(compiled):
        if len({home[a] for a in agents}) > 1:
            raise RunError(f"{link} fits itself from the models of {' and '.join(map(repr, agents))}, which would "
                           "live in different Ray actors", culprit=link,
                           hint="give the link weights (recmas calibrate), or place both agents on one GPU")
    spec_json = dump_topology(spec)
    base = str(compiled.base_dir) if compiled.base_dir is not None else None
    shipped = ship_registry(compiled.catalog)
    remote = ray.remote(AgentHost)
    hosts: dict[str, Any] = {}
    handles = []
    try:
        for names, dev, _ in groups:
            on_gpu = dev.startswith("cuda")
            options = {"num_gpus": 1} if on_gpu else ({"num_cpus": cpus_per_actor} if cpus_per_actor else {})
            # the build's dtype: each agent resolves its own (its spec's, else this one), as in process
            handle = remote.options(**options).remote(spec_json, base, names, "cuda" if on_gpu else dev, dtype,
                                                      cpus_per_actor or 1, {n: where[n] for n in names}, shipped)
            handles.append(handle)
            for name in names:
                hosts[name] = handle
                if on_model is not None:
                    on_model(name, spec.agent(name).model)
        facts: dict[str, ModelFacts] = {}
        for part in _all(ray, [h.load.remote() for h in handles]):
            facts.update(part)
        state: dict[str, torch.Tensor] = {}
        for part in _all(ray, [h.build_links.remote(facts, seed, torch.get_num_threads()) for h in handles]):
            state.update(part)
        _all(ray, [h.load_links.remote(state) for h in handles])
    except BaseException:
        for handle in handles:  # no actor outlives a failed build
            ray.kill(handle)
        raise
    inner, outer = build_system_links(compiled, facts, seed=seed, own=())
    system = RecursiveSystem(compiled, {}, inner, outer, hooks=getattr(compiled.catalog, "hooks", None))
    system.load_state_dict(state)
    system.model_facts = facts
    system.runner = RayRunner(hosts)
    system.build_options = {"models": models, "model": dict(model or {}), "device": device, "dtype": dtype,
                            "seed": seed, "backend": "ray", **({"placement": placement} if placement else {})}
    return system


