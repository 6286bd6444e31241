"""The `DataContext` of a run or an evaluation: where the run's tokenizer lives and who saves it.

    bundle = build_data(cfg.data, cfg.task, run_context(cfg, reporter, strategy))   # engine.run
    bundle = build_data(cfg.data, cfg.task, checkpoint_context(checkpoint))         # evaluate

A run that will resume (checkpoint.resume `auto` with checkpoints in its run dir, or an explicit
checkpoint) reuses the tokenizer.json saved beside those checkpoints instead of training one
again, so its ids are the ones its weights were trained on. A fresh start trains (rank 0) and
saves one; when it starts in a run dir that holds an earlier run, that run is moved aside first
(as the Trainer would do a moment later), so the new tokenizer.json stays with the new run.
`auto` trusts that a checkpoint with a manifest will load (hashing it here would double the
resume's cost); if every one fails its hashes, the Trainer starts fresh with the tokenizer this
data was built with: it moves the earlier run aside and keeps the tokenizer files in place.
"""

from __future__ import annotations

from pathlib import Path

from tengine.config import TengineConfig
from tengine.data.context import DataContext
from tengine.data.tokenizers import TOKENIZER_FILE
from tengine.engine.checkpoint import MANIFEST, STEP_DIR


def _has_checkpoints(root: Path) -> bool:
    """Any checkpoint with a manifest (not hashed: the Trainer verifies the one it loads)."""
    return root.is_dir() and any(STEP_DIR.match(p.name) and (p / MANIFEST).is_file()
                                 for p in root.iterdir())


def run_context(cfg: TengineConfig, reporter, strategy) -> DataContext:
    from tengine.engine.callbacks import progress_enabled
    from tengine.engine.trainer import archive_previous_run

    run_dir, resume = Path(reporter.run_dir), cfg.checkpoint.resume
    if resume not in ("auto", "never"):  # an explicit checkpoint: the tokenizer of its run
        origin = Path(resume).parent.parent
        saved = origin if (origin / TOKENIZER_FILE).is_file() else run_dir
    elif resume == "auto" and _has_checkpoints(Path(reporter.checkpoint_root)):
        saved = run_dir
    else:
        saved = None
        writes = cfg.data.tokenizer != "byte" or cfg.data.source == "tokens"
        if writes and strategy.is_main:  # only then earlier than the Trainer would
            archive_previous_run(run_dir)  # a no-op unless the dir holds an earlier run
    return DataContext(run_dir=run_dir, saved=saved, is_main=strategy.is_main,
                       broadcast=strategy.broadcast,
                       progress=strategy.is_main and progress_enabled(cfg.logging.progress_bar))


def checkpoint_context(checkpoint: str | Path) -> DataContext:
    """An evaluation writes nothing and uses the tokenizer of the checkpoint's run
    (`RUN/checkpoints/step_X` → `RUN/tokenizer.json`)."""
    return DataContext(run_dir=None, saved=Path(checkpoint).parent.parent)
