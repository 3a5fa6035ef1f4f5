#!/usr/bin/env bash
# The recipe of the shipped trained links of sequential_light_mini (topologies/sequential_light_mini_trained.json).
#
# Training data: ARC-Easy validation (first 506 questions; the next 64 are held out) and ARC-Challenge
# validation (all 299), asked as likelihood scoring asks (`--answers cloze`: the question without its
# option lines, answered by the gold option's text), so disjoint from every test split the README and
# docs evaluate on (ARC-Easy test, ARC-Challenge test, GSM8K, MMLU). Then closed-form calibration of
# every link on those texts, then the outer loop (answer cross-entropy through all rounds, task
# `choice`) from the calibrated links, then the links stored at half precision with a record of this
# recipe (sha256 of every file) that tests/test_shipped_links.py checks.
#
# About 65 minutes on 2 CPU cores shared with other work (calibration 70 s, 40 outer steps of 60-100 s
# with checkpoints every 5: rerun the train line with --resume after an interruption; gradient
# checkpointing keeps the run near 4 GB of memory instead of about 17 GB at batch 8). Usage: bash scripts/train_mini_links.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-runs/mini}"
RECMAS="${RECMAS:-.venv/bin/recmas}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$RUN"

"$RECMAS" data make arc_easy_val --answers cloze --train 506 --heldout 64 -o "$RUN/arc_val.jsonl"
"$RECMAS" data make arc_challenge_val --answers cloze --train 299 -o "$RUN/arcc_val.jsonl"
cat "$RUN/arc_val.jsonl" "$RUN/arcc_val.jsonl" > "$RUN/train.jsonl"
"$RECMAS" calibrate sequential_light_mini --corpus "$RUN/train.jsonl" --limit 320 -o "$RUN/cal"
"$RECMAS" train outer "$RUN/cal/topology.json" --data "$RUN/train.jsonl" -o "$RUN/outer" --steps 40 --batch-size 8 \
  --task choice --lr 3e-3 --warmup 5 --eval-every 20 --save-every 5 --heldout 0.04 --seed 0 --gradient-checkpointing
"$PY" scripts/ship_links.py "$RUN/outer" sequential_light_mini_trained --recipe "$0" --data "$RUN/train.jsonl"
