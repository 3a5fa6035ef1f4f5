"""Offline tests; installed plugins are not loaded (each test passes recmas_debate explicitly)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["RECMAS_DISABLE_PLUGINS"] = "1"
