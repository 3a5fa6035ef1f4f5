"""recmas-debate: an example recmas_graph plugin.

It registers, through the same hooks the built-ins use:

- roles ``debater`` and ``judge``;
- the topology ``debate``: two debaters and a judge; each debater's argument reaches the judge in
  the same round, the judge's verdict and the other debater's argument reach each debater in the
  next round; the judge answers;
- the link type ``ridge_realign`` (:class:`recmas_debate.ridge.RidgeRealign`): a training-free inner
  link that maps last-layer hidden states to input embeddings by ridge regression (LatentMAS style).

The module is light: importing it pulls in neither torch nor transformers (the link is registered
by import path and built only when a system runs).
"""

from __future__ import annotations

from pathlib import Path

from recmas_graph import LinkType, Role, SlotSection, hookimpl

__all__ = ["DEBATER", "JUDGE", "TOPOLOGY_FILE", "__version__"]
__version__ = "0.1.0"

_Q = "Question:\n{question}"

DEBATER = Role(
    name="debater",
    description="Argues for an answer and rebuts the opponent, taking the judge's verdict into account.",
    instructions={
        "default": "You are a Debater. Work out the answer you believe is correct and argue for it "
                   "concisely, step by step. Where your opponent's previous argument is wrong, say why.\n\n" + _Q,
        "code": "You are a Debater. Propose the algorithm you believe is correct for the programming task, "
                "with its edge cases, and point out flaws in your opponent's previous proposal.\n\n" + _Q,
    },
    slots=(
        SlotSection("opponent", "Your opponent's previous argument:"),
        SlotSection("verdict", "The judge's verdict on the previous round:"),
    ),
    answers=True,
)

JUDGE = Role(
    name="judge",
    description="Weighs both debaters' arguments and gives the final answer.",
    instructions={
        "default": "You are the Judge of a debate. Read both debaters' arguments, check their reasoning, "
                   "decide which answer is correct (or work it out yourself when both are wrong) and "
                   "answer the question.\n\n" + _Q,
    },
    slots=(
        SlotSection("argument_a", "Argument of debater A:"),
        SlotSection("argument_b", "Argument of debater B:"),
    ),
    answers=True,
)

#: The ``debate`` topology file shipped with the plugin.
TOPOLOGY_FILE = Path(__file__).parent / "topologies" / "debate.json"


@hookimpl
def recmas_roles() -> list[Role]:
    return [DEBATER, JUDGE]


@hookimpl
def recmas_topologies() -> list[Path]:
    return [TOPOLOGY_FILE]


@hookimpl
def recmas_link_types() -> list[LinkType]:
    return [
        LinkType("ridge_realign", "inner", "recmas_debate.ridge:RidgeRealign",
                 "training-free: hidden -> input embedding by ridge regression on the model's own "
                 "embedding matrices (LatentMAS realignment); fitted by calibrate(model)",
                 options=("lam", "match_norm", "chunk_rows")),
    ]
