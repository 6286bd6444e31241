"""The typed config: one pydantic v2 model per section, one source of truth for every field.

Every field has a default and a description; `docs/config.md` is generated from this file by
`scripts/gen_config_docs.py`. Unknown keys are errors (`extra="forbid"`). Cross-field rules live
in `model_validator`s so that a bad config fails before any work with the field path in the
message. Names that live in registries (model, loss, data source, ...) are checked by
`tengine.engine.preflight`, which knows the registries; this layer does not import torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

TaskType = Literal[
    "language_modeling", "classification", "vision_classification", "segmentation", "multilabel"
]
Precision = Literal["auto", "bf16", "fp16", "fp32"]
Backend = Literal["single", "ddp", "fsdp", "deepspeed"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HFModelConfig(Section):
    config: dict[str, Any] | None = Field(
        None, description="Fields of a `transformers` config, with its `model_type` (e.g. "
        "`{model_type: gpt2, n_layer: 2, n_embd: 64, n_head: 2}`): random init. "
        "`vocab_size` (and `num_labels`) default to what the data gives.",
    )
    path: str | None = Field(
        None, description="A local `save_pretrained` directory: its config and pretrained weights.",
    )
    head: Literal["auto", "causal_lm", "sequence_classification"] = Field(
        "auto", description="Model head; `auto` = causal LM for language_modeling, sequence "
        "classification for classification.",
    )
    attn_implementation: Literal["sdpa", "eager"] = Field(
        "sdpa", description="Attention kernel (`sdpa` = PyTorch scaled_dot_product_attention).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> HFModelConfig:
        if (self.config is None) == (self.path is None):
            raise ValueError("model.hf: give exactly one of `config` (random init from fields) "
                             "or `path` (a save_pretrained directory)")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("model.hf.config needs `model_type` (e.g. gpt2, llama, bert)")
        return self


class ModelConfig(Section):
    name: str = Field(
        "gpt",
        description="Registered model (`gpt`, `hf`, `classifier`, `vision_cnn`) or a user "
        "factory `package.module:factory`, called with `model.kwargs` plus `vocab_size`, "
        "`num_classes` and `max_seq_len` where its signature names them.",
    )
    hf: HFModelConfig | None = Field(
        None, description="A Hugging Face `transformers` model, for `name: hf`.",
    )
    init_from: str | None = Field(
        None, description="Initial weights only (no step, optimizer or schedule): a "
        "`.safetensors` file, a Hugging Face directory, or a tengine checkpoint of any backend.",
    )
    init_strict: bool = Field(
        True, description="With `init_from`: missing or unexpected keys are an error (false = "
        "a warning listing them).",
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (per block for `gpt`, "
        "`gradient_checkpointing_enable` for HF models): less memory, ~30% more compute.",
    )
    size: str = Field(
        "tiny",
        description="Size preset for `gpt` (`tiny`, `small`, `medium`, `gpt2`); explicit "
        "`d_model`/`n_layers`/`n_heads` override it.",
    )
    d_model: PositiveInt | None = Field(None, description="Hidden width; null = from `size`.")
    n_layers: PositiveInt | None = Field(None, description="Transformer blocks; null = from `size`.")
    n_heads: PositiveInt | None = Field(None, description="Attention heads; null = from `size`.")
    d_ff: PositiveInt | None = Field(None, description="MLP width; null = 4 × d_model.")
    max_seq_len: PositiveInt | None = Field(
        None, description="Positions the model supports; null = `data.seq_len`."
    )
    vocab_size: PositiveInt | None = Field(
        None, description="Vocabulary size; null = taken from the tokenizer/data source."
    )
    num_classes: PositiveInt | None = Field(
        None, description="Output classes for classifiers; null = `task.num_classes`."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout probability.")
    tie_weights: bool = Field(True, description="Tie the LM head to the token embedding.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments passed to the model factory."
    )

    @model_validator(mode="after")
    def _hf_section(self) -> ModelConfig:
        if self.name == "hf" and self.hf is None:
            raise ValueError("model.name 'hf' needs a model.hf section: `hf: {config: {model_type: "
                             "gpt2, ...}}` or `hf: {path: DIR}`")
        if self.name != "hf" and self.hf is not None:
            raise ValueError(f"model.hf is set but model.name is '{self.name}'; set model.name: hf")
        return self


class MarkovConfig(Section):
    vocab_size: PositiveInt = Field(16, ge=2, description="Symbols of the Markov source.")
    order: PositiveInt = Field(2, le=4, description="Context length k of the order-k source.")
    num_tokens: PositiveInt = Field(200_000, description="Tokens generated (train + val).")
    concentration: float = Field(
        0.3, gt=0, description="Dirichlet concentration of each transition row; lower = more "
        "predictable text and a lower loss floor.",
    )
    seed: int = Field(1234, description="Seed of the transition table and the sampled stream.")


class DataConfig(Section):
    source: str = Field(
        "synthetic_markov",
        description="Data source: `synthetic_markov`, `text_files`, `jsonl`, `hf`, `tokens` "
        "(pre-tokenized shards, see `tengine data prepare`), `synthetic_classification`, "
        "`synthetic_images`, or your own `package.module:factory` returning a `DataBundle` or a "
        "`(train, val)` tuple of datasets.",
    )
    path: str | None = Field(
        None,
        description="Glob (`text_files`), file (`jsonl`), dataset name/data files (`hf`), or "
        "shards (`tokens`: a glob of `.bin`/`.npy` files, or a `data prepare` directory). "
        "For `text_files` null = the running Python's standard library `.py` files.",
    )
    val_path: str | None = Field(
        None, description="Separate validation file/glob; null = split off `val_fraction` "
        "(`tokens` with a directory: its `val_*` shards when there are any).",
    )
    hf_split: str = Field("train", description="Split loaded by the `hf` source.")
    text_field: str = Field("text", description="Text field in JSONL/HF records.")
    label_field: str = Field("label", description="Label field in JSONL/HF records.")
    max_bytes: PositiveInt | None = Field(
        None, description="Cap on bytes read by `text_files`/`jsonl`/`hf` (each of train and "
        "validation); null = read everything. A cap that cuts the corpus logs how much was kept.",
    )
    tokenizer: Literal["byte", "bpe", "hf"] = Field(
        "byte", description="`byte` (256 symbols), `bpe` (HF tokenizers, trained once on the "
        "run's training texts and saved as `RUN_DIR/tokenizer.json`) or `hf` (a local "
        "tokenizer, `data.tokenizer_path`).",
    )
    tokenizer_path: str | None = Field(
        None, description="For `tokenizer: hf`: a `tokenizer.json` file or a `save_pretrained` "
        "(AutoTokenizer) directory; no download.",
    )
    eos_token: str | None = Field(
        None, description="End-of-document token of an `hf` tokenizer; null = the tokenizer's "
        "own (`eos_token`, or a known one such as `<|endoftext|>` or `</s>` in a bare "
        "tokenizer.json).",
    )
    bpe_vocab_size: PositiveInt = Field(1024, ge=260, description="Vocabulary of the `bpe` tokenizer.")
    token_dtype: Literal["uint16", "uint32"] | None = Field(
        None, description="dtype of raw `.bin` shards (`tokens` source); null = from the "
        "`meta.json` beside them (`.npy` shards carry their own).",
    )
    seq_len: PositiveInt = Field(128, description="Tokens per training sequence.")
    pack: bool = Field(
        True, description="Pack LM text into full `seq_len` blocks (no padding); off = one "
        "sequence per record, padded by the collator with label -100.",
    )
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="Held-out tail for validation.")
    collator: str | None = Field(
        None, description="Collator (`lm`, `classification`, `vision`, `default`); null = by task."
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    num_samples: PositiveInt = Field(
        4096, description="Examples made by the synthetic classification/image sources."
    )
    image_size: PositiveInt = Field(16, description="Side of `synthetic_images` images.")
    markov: MarkovConfig = Field(default_factory=MarkovConfig, description="`synthetic_markov` source.")

    @model_validator(mode="after")
    def _tokenizer_path(self) -> DataConfig:
        if self.tokenizer == "hf" and not self.tokenizer_path:
            raise ValueError("data.tokenizer 'hf' needs data.tokenizer_path (a tokenizer.json "
                             "file or a save_pretrained directory)")
        if self.tokenizer != "hf" and (self.tokenizer_path or self.eos_token):
            which = "data.tokenizer_path" if self.tokenizer_path else "data.eos_token"
            raise ValueError(f"{which} is only read with data.tokenizer 'hf' (got "
                             f"'{self.tokenizer}'); set data.tokenizer: hf or drop it")
        return self


class TaskConfig(Section):
    type: TaskType = Field("language_modeling", description="What is learned; picks default loss and collator.")
    loss: str | None = Field(
        None, description="Registered loss strategy; null = the task's default."
    )
    num_classes: PositiveInt | None = Field(None, description="Classes for classification tasks.")
    class_weights: list[float] | None = Field(
        None, description="Per-class loss weights (classification); length = num_classes."
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing (classification).")

    @model_validator(mode="after")
    def _weights_match_classes(self) -> TaskConfig:
        if self.class_weights is not None:
            if self.num_classes is None:
                raise ValueError("task.class_weights needs task.num_classes")
            if len(self.class_weights) != self.num_classes:
                raise ValueError(
                    f"task.class_weights has {len(self.class_weights)} entries but "
                    f"task.num_classes is {self.num_classes}; give one weight per class"
                )
            if any(w < 0 for w in self.class_weights):
                raise ValueError("task.class_weights must be ≥ 0")
        return self


class OptimConfig(Section):
    name: Literal["adamw"] = Field("adamw", description="Optimizer (AdamW with no-decay groups).")
    lr: float = Field(3e-4, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="Decoupled weight decay (not on biases/norms/embeddings).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam betas, each in [0, 1).")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    grad_clip: float | None = Field(1.0, gt=0, description="Max global gradient norm; null = no clipping.")
    fused: Literal["auto", "on", "off"] = Field(
        "auto", description="Fused AdamW kernel: `auto` = on where the device supports it."
    )

    @model_validator(mode="after")
    def _betas_in_range(self) -> OptimConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas {list(self.betas)}: each must be in [0, 1)")
        return self


class ScheduleConfig(Section):
    name: Literal["cosine", "linear", "constant"] = Field("cosine", description="LR decay after warmup.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps from 0 to `optim.lr`.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR as a fraction of `optim.lr`.")


class EarlyStoppingConfig(Section):
    patience: int | None = Field(
        None, ge=1, description="Evaluations without improvement before stopping; null = off."
    )
    min_delta: float = Field(0.0, ge=0, description="Improvement smaller than this does not count.")


class TrainingConfig(Section):
    epochs: PositiveInt | None = Field(None, description="Passes over the data (used when max_steps is null).")
    max_steps: PositiveInt | None = Field(
        None, description="Optimizer steps to run; wins over `epochs`. Both null = 1 epoch."
    )
    micro_batch_size: PositiveInt = Field(16, description="Sequences per forward pass per worker.")
    grad_accum_steps: PositiveInt = Field(1, description="Micro-batches per optimizer step.")
    eval_every_n_steps: int = Field(100, ge=0, description="Validate every N steps (and at the end); 0 = only at the end.")
    eval_batches: PositiveInt | None = Field(
        None, description="Evaluate the first eval_batches × micro_batch_size validation items "
        "(split over the ranks, so the same items whatever the world size); null = whole split.")
    log_every_n_steps: PositiveInt = Field(10, description="Write a metrics record every N steps.")
    max_nonfinite_steps: PositiveInt = Field(
        3, description="Consecutive non-finite steps (skipped) before the run stops with an error."
    )
    max_time: str | None = Field(
        None, description="Wall-time budget of this process (`90s`, `45m`, `3h`, `1d`): at the "
        "first step boundary past it the run checkpoints, writes status `preempted` and exits; "
        "the same command resumes.", pattern=r"^\s*\d+(\.\d+)?\s*[smhd]\s*$",
    )
    halt_at_step: PositiveInt | None = Field(
        None, description="End the run after this step as if preempted (checkpoint, no final "
        "eval); the schedule still follows max_steps. For time-boxed jobs; resume continues.",
    )
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig, description="Stop when `checkpoint.monitor` stops improving.")


class FSDPConfig(Section):
    wrap: list[str] | None = Field(
        None, description="Module class names that become FSDP shard units, bottom-up; null = "
        "an HF model's `_no_split_modules`, else the blocks of its `nn.ModuleList`s.",
    )


class DistributedConfig(Section):
    workers: int = Field(0, ge=0, description="Ray Train workers; 0 = train in this process without Ray.")
    backend: Backend = Field("single", description="`single` (one device), `ddp` (Accelerate), `fsdp` (PyTorch FSDP2) or `deepspeed` (ZeRO).")
    zero_stage: int = Field(0, ge=0, le=3, description="DeepSpeed ZeRO stage (1–3) with backend=deepspeed; 0 otherwise.")
    offload_optimizer: bool = Field(False, description="DeepSpeed: keep optimizer state on CPU (ZeRO ≥ 1).")
    offload_params: bool = Field(False, description="DeepSpeed: keep parameters on CPU (ZeRO-3 only).")
    deepspeed_config: str | None = Field(
        None, description="Extra DeepSpeed JSON merged into the generated one; a value that "
        "contradicts this config (micro-batch, accumulation, clipping, precision, stage, "
        "offload) is an error.",
    )
    find_unused_parameters: bool = Field(
        False, description="DDP: allow parameters that get no gradient in a step (a model "
        "with branches); costs a graph walk per step.",
    )
    fsdp: FSDPConfig = Field(default_factory=FSDPConfig, description="FSDP2 sharding.")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs reserved per Ray worker (0 = CPU workers).")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved per Ray worker.")
    max_failures: int = Field(0, ge=-1, description="Worker-group restarts Ray may do (-1 = unlimited).")
    storage_path: str | None = Field(None, description="Ray Train storage: its run state plus a durable copy of every checkpoint (a dir, or `s3://`/`gs://` URI; resume fetches from it when the run dir lacks the newest). null = run state in `.ray` beside the run dir, no copy.")
    kill_rank_at_step: int | None = Field(
        None, ge=1, description="Test-only fault injection: the last rank SIGKILLs itself after "
        "this step, once per run dir (checks that Ray restarts the group and training resumes).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DistributedConfig:
        problems = []
        if self.backend == "single" and self.workers > 1:
            problems.append(
                f"distributed.backend 'single' runs one process but distributed.workers is "
                f"{self.workers}; use backend ddp, fsdp or deepspeed"
            )
        if self.backend == "deepspeed" and self.zero_stage == 0:
            problems.append("distributed.zero_stage must be 1, 2 or 3 with backend 'deepspeed'")
        if self.backend != "deepspeed" and self.zero_stage != 0:
            problems.append(
                f"distributed.zero_stage {self.zero_stage} needs backend 'deepspeed' "
                f"(got '{self.backend}'); set zero_stage 0 or backend deepspeed"
            )
        if (self.offload_optimizer or self.offload_params) and self.backend != "deepspeed":
            problems.append("distributed.offload_optimizer/offload_params need backend 'deepspeed'")
        if self.find_unused_parameters and self.backend != "ddp":
            problems.append(f"distributed.find_unused_parameters is a DDP option; backend is "
                            f"'{self.backend}'")
        if self.fsdp.wrap is not None and self.backend != "fsdp":
            problems.append(f"distributed.fsdp.wrap needs backend 'fsdp' (got '{self.backend}')")
        if self.offload_params and self.zero_stage != 3:
            problems.append(f"distributed.offload_params needs zero_stage 3 (got {self.zero_stage})")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class CheckpointConfig(Section):
    every_n_steps: int = Field(100, ge=0, description="Save every N optimizer steps (and at the end); 0 = only at the end.")
    keep_last: PositiveInt = Field(2, description="Newest checkpoints kept.")
    keep_best: int = Field(1, ge=0, description="Best checkpoints kept by `monitor`, besides the newest.")
    monitor: Literal["val_loss", "val_accuracy", "train_loss"] = Field("val_loss", description="Metric ranking checkpoints and early stopping.")
    mode: Literal["min", "max"] = Field("min", description="Whether a lower or higher `monitor` is better.")
    resume: str = Field("auto", description="`auto` (newest valid checkpoint in the run dir), `never`, or a checkpoint path.")

    @model_validator(mode="after")
    def _mode_matches_monitor(self) -> CheckpointConfig:
        expected = "max" if self.monitor == "val_accuracy" else "min"
        if self.mode != expected:
            raise ValueError(
                f"checkpoint.mode '{self.mode}' with monitor '{self.monitor}' would keep the "
                f"worst checkpoints; use mode '{expected}'"
            )
        return self


class WandbConfig(Section):
    mode: Literal["auto", "offline", "online", "disabled"] = Field(
        "auto", description="`auto` = online when WANDB_API_KEY is set, else offline (a local "
        "`RUN/wandb/offline-run-*` to `wandb sync` later).")
    project: str = Field("tengine", description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); default: yours.")
    tags: list[str] = Field(default_factory=list, description="Tags of the W&B run.")
    log_checkpoints: bool = Field(True, description="Log each checkpoint as an artifact that "
                                  "references its files (checksummed, not uploaded).")


class DbTrackerConfig(Section):
    store: str | None = Field(
        None, description="Store URI of the experiment DB (`sqlite:///abs/path.db`, "
        "`postgresql://user@host/db`); default: the runs root's embedded store "
        "`<logging.root>/control/tengine.db`, the one `tengine runs` and `tengine jobs` read by "
        "default. Workers on several hosts: a PostgreSQL store.")


class LoggingConfig(Section):
    root: str = Field("runs", description="Parent directory of run dirs (`<root>/<name>`).")
    trackers: list[Literal["jsonl", "db", "tensorboard", "wandb"]] = Field(
        default_factory=lambda: ["jsonl", "db"], description="Where records go (rank 0): "
        "`jsonl` = the run dir's metrics.jsonl (always written), `db` = the experiment DB "
        "(`logging.db`; `tengine runs`), `tensorboard` = event files in `RUN/tensorboard/`, "
        "`wandb` = Weights & Biases (`logging.wandb`). A tracker that fails is a warning, never "
        "a failed run.")
    tags: list[str] = Field(default_factory=list, description="Tags of the run (the experiment "
                            "DB's `tengine runs list --tag`, and W&B's).")
    sweep: str | None = Field(None, description="The sweep this run is a trial of (set by "
                              "`tengine sweep`; `tengine runs list --sweep NAME`).")
    db: DbTrackerConfig = Field(default_factory=DbTrackerConfig, description="Experiment DB.")
    wandb: WandbConfig = Field(default_factory=WandbConfig, description="Weights & Biases.")
    callbacks: list[str] = Field(
        default_factory=list, description="Your own callbacks, `package.module:Class` (called "
        "with no arguments; hooks as in tengine.engine.callbacks.Callback); failures are "
        "warnings, like a tracker's.")
    progress_bar: Literal["auto", "on", "off"] = Field("auto", description="tqdm bar: `auto` = only on a TTY outside CI.")

    @field_validator("progress_bar", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value
    plots: bool = Field(True, description="Write loss/lr/throughput PNGs to `plots/` at the end.")


class ExportConfig(Section):
    formats: list[Literal["safetensors", "pt2", "onnx", "torchscript"]] = Field(
        default_factory=lambda: ["safetensors", "pt2", "onnx"],
        description="Formats of `tengine export`'s bundle: safetensors (always included), pt2 "
        "(torch.export), onnx, torchscript (legacy, opt-in).",
    )
    parity_atol: float = Field(1e-4, gt=0, description="Max abs difference from PyTorch (fp32) "
                               "allowed in parity checks.")
    onnx_opset: int = Field(18, ge=11, le=23, description="ONNX opset of the dynamo exporter "
                            "(18 is its native opset; an older one is converted down).")
    latency_iters: int = Field(50, ge=0, description="Timed calls per format and batch size "
                               "after warm-up (0: no latency figures).")


class DriftConfig(Section):
    warn: float = Field(0.1, gt=0, le=1, description="A feature whose statistic (JS distance, "
                        "base 2; KS D; a channel-mean shift in SDs) reaches this is `warn`.")
    alert: float = Field(0.2, gt=0, le=1, description="... and `alert` at this (≥ `warn`).")
    min_examples: PositiveInt = Field(100, description="Fewer current examples than this: "
                                      "`insufficient`, never an alert.")
    min_per_bin: PositiveInt = Field(50, description="Bins are merged (the reference's rarest "
                                     "first) until each expects this many current samples: "
                                     "sampling noise alone reads ~0.1 on 256 bins × 4k tokens.")
    psi_eps: float = Field(1e-4, gt=0, lt=0.01, description="PSI's floor for an empty bin.")
    overlap_k: PositiveInt = Field(50, description="k of the top-k token overlap.")
    alpha: float = Field(0.001, gt=0, lt=0.5, description="Significance level of the entropy "
                         "two-sample test (a D past the thresholds counts only below it).")

    @model_validator(mode="after")
    def _ordered(self) -> DriftConfig:
        if self.alert < self.warn:
            raise ValueError(f"monitoring.drift.alert {self.alert} is below warn {self.warn}")
        return self


AlertRuleKind = Literal["val_loss_spike", "accuracy_drop", "grad_norm", "nonfinite", "drift"]


class AlertRuleConfig(Section):
    kind: AlertRuleKind = Field(description="`val_loss_spike` (val_loss above its best by a "
                                "relative `threshold`), `accuracy_drop` (val_accuracy below its "
                                "best by `threshold`), `grad_norm` (above `threshold`), "
                                "`nonfinite` (skipped non-finite steps), `drift` (a drift "
                                "report at status `alert`; `threshold` 0.1 = at `warn` too).")
    threshold: float | None = Field(None, ge=0, description="The rule's bound; null = its "
                                    "default (0.2, 0.05, none, 0, the report's own status).")
    patience: PositiveInt = Field(1, description="Fires when the condition holds in `patience` "
                                  "of the last `window` observations (M of N).")
    window: PositiveInt = Field(1, description="N of M-of-N (≥ patience).")

    @model_validator(mode="after")
    def _window(self) -> AlertRuleConfig:
        if self.window < self.patience:
            raise ValueError(f"window {self.window} is below patience {self.patience}")
        if self.kind == "grad_norm" and self.threshold is None:
            raise ValueError("a grad_norm rule needs a threshold (the norm it alerts above)")
        return self


class AlertSinkConfig(Section):
    kind: Literal["log", "jsonl", "webhook", "wandb"] = Field(description="Where alerts go.")
    path: str | None = Field(None, description="jsonl: the file; default `RUN/alerts.jsonl`.")
    url: str | None = Field(None, description="webhook: the URL alerts are POSTed to as JSON.")
    url_env: str | None = Field(None, description="webhook: the environment variable holding "
                                "the URL instead (a Slack-style URL is a secret).")
    secret_env: str | None = Field(None, description="webhook: the environment variable "
                                   "holding the HMAC-SHA256 key; the body's signature goes in "
                                   "`X-Tengine-Signature: sha256=<hex>`.")
    retries: int = Field(5, ge=0, le=20, description="webhook: retries on 429/5xx/no answer.")
    backoff_s: float = Field(0.5, ge=0, description="webhook: first retry delay, doubled each "
                             "time (a Retry-After answer is followed), capped at max_backoff_s.")
    max_backoff_s: float = Field(30.0, ge=0, description="webhook: the longest retry delay.")
    timeout_s: float = Field(10.0, gt=0, description="webhook: seconds per attempt.")
    dead_letter: str | None = Field(None, description="webhook: where undeliverable alerts are "
                                    "appended (JSONL); default `RUN/alerts_dead_letter.jsonl`.")

    @model_validator(mode="after")
    def _webhook(self) -> AlertSinkConfig:
        if self.kind == "webhook" and bool(self.url) == bool(self.url_env):
            raise ValueError("a webhook sink needs exactly one of url and url_env")
        return self


def _default_rules() -> list[AlertRuleConfig]:
    return [AlertRuleConfig(kind="val_loss_spike"), AlertRuleConfig(kind="accuracy_drop"),
            AlertRuleConfig(kind="nonfinite"), AlertRuleConfig(kind="drift")]


class AlertsConfig(Section):
    enabled: bool = Field(True, description="Evaluate the rules on the run's records (rank 0).")
    rules: list[AlertRuleConfig] = Field(default_factory=_default_rules, description="Alert "
                                         "rules; each is ok → firing → resolved.")
    sinks: list[AlertSinkConfig] = Field(
        default_factory=lambda: [AlertSinkConfig(kind="log"), AlertSinkConfig(kind="jsonl")],
        description="Where alerts are sent.")
    repeat_after_s: float = Field(3600.0, ge=0, description="A condition still firing is sent "
                                  "again after this many seconds (0: never again).")


class MonitoringConfig(Section):
    profile: bool = Field(True, description="Write `RUN/profile.json` (the data's profile, drift's "
                          "reference) and `RUN/profile_batch.npz` when training starts (rank 0).")
    profile_examples: PositiveInt = Field(20_000, description="Train examples profiled, spread "
                                          "evenly over the split (all of a smaller one).")
    reference_examples: PositiveInt = Field(256, description="Validation examples kept as the "
                                            "reference batch model-output profiles are taken on.")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Drift statistics.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Alert rules and sinks.")


class TengineConfig(Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name; the run dir is `<logging.root>/<name>`.")
    seed: int = Field(0, ge=0, description="Base seed; each rank uses seed + rank.")
    deterministic: bool = Field(False, description="Deterministic kernels (slower; errors on ops without one).")
    precision: Precision = Field("auto", description="`auto` = bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU.")
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data.")
    task: TaskConfig = Field(default_factory=TaskConfig, description="Task and loss.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer.")
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig, description="Learning-rate schedule.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Loop lengths and cadences.")
    distributed: DistributedConfig = Field(default_factory=DistributedConfig, description="Workers and backend.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints and resume.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Run dir, progress, plots.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Export bundle.")
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig, description="Profiles, drift and alerts.")

    @model_validator(mode="after")
    def _cross_section(self) -> TengineConfig:
        problems = []
        t = self.training
        if t.halt_at_step and t.max_steps and t.halt_at_step > t.max_steps:
            problems.append(
                f"training.halt_at_step {t.halt_at_step} is past training.max_steps {t.max_steps}"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def run_dir(self) -> str:
        return f"{self.logging.root}/{self.name}"
