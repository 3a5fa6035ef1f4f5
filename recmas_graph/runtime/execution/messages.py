"""The message store: what passes send each other, keyed by ``(edge id, source round)``.

Values are plain tensors (latent messages, already in the target agent's hidden space, on its
device) and lists of strings (text messages), so a store can be pickled or sent to another process.
A message is dropped as soon as its last consumer has read it, unless the store keeps everything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Union

import torch

from ...topology.schedule import Input

__all__ = ["Message", "MessageStore"]

#: A latent message (B, m, H_target) or a text message (one string per question).
Message = Union[torch.Tensor, list[str]]


class MessageStore:
    """Messages by ``(edge id, source round)``; ``consumers`` counts how many passes read each one."""

    def __init__(self, consumers: Mapping[tuple[str, int], int] | None = None, *, keep: bool = False) -> None:
        self._messages: dict[tuple[str, int], Message] = {}
        self._remaining = dict(consumers or {})
        self.keep = keep

    def put(self, edge: str, round: int, value: Message) -> None:
        """Store the message ``edge`` carries from round ``round``."""
        self._messages[(edge, round)] = value

    def get(self, edge: str, round: int) -> Message:
        """The message ``edge`` carries from round ``round`` (KeyError naming it when absent)."""
        try:
            return self._messages[(edge, round)]
        except KeyError:
            raise KeyError(f"no message on edge {edge!r} from round {round}: its source pass has not run or the "
                           f"message was released after its last reader (keep=True keeps every message)") from None

    def gather(self, inputs: Sequence[Input]) -> dict[tuple[str, int], Message]:
        """The messages a pass reads, by key."""
        return {item.key: self.get(*item.key) for item in inputs}

    def release(self, inputs: Sequence[Input]) -> None:
        """Count one read of each input; drop messages nobody will read again (unless ``keep``)."""
        for item in inputs:
            left = self._remaining.get(item.key, 1) - 1
            self._remaining[item.key] = left
            if left <= 0 and not self.keep:
                self._messages.pop(item.key, None)

    def items(self) -> Iterator[tuple[tuple[str, int], Message]]:
        """``((edge, round), message)`` pairs in the order they were stored."""
        return iter(list(self._messages.items()))

    def __contains__(self, key: object) -> bool:
        return key in self._messages

    def __len__(self) -> int:
        return len(self._messages)

    def state(self) -> dict[str, Message]:
        """The messages as a plain ``{"edge@round": value}`` dict (CPU tensors), e.g. for ``torch.save``."""
        return {f"{edge}@{r}": (v.detach().cpu() if isinstance(v, torch.Tensor) else list(v))
                for (edge, r), v in self._messages.items()}

    @classmethod
    def from_state(cls, state: Mapping[str, Message]) -> "MessageStore":
        """The inverse of :meth:`state`."""
        store = cls()
        for key, value in state.items():
            edge, _, r = key.rpartition("@")
            store.put(edge, int(r), value)
        return store
