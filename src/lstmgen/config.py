"""Settings: one dataclass per concern, validated on construction, saved as JSON in the run directory.

The CLI builds one flag per field (``seq_len`` -> ``--seq-len``), with the help text declared beside
the field's default (``setting``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from lstmgen.errors import LstmgenError

# A line that is nothing but a download site's notice, a URL or a web page's navigation (a menu of
# "首页|...|..." links, "点此察看详情", or a line that is only "后一页", "回目录", ...): dropped.
# Phrases that also occur in stories (本书来自, 整理制作, 手机阅读) count only beside a site's words; a
# domain counts before a non-letter, Chinese included ("biquge.com笔趣阁").
DEFAULT_ADVERT_PATTERN = (
    r"(https?://|www\.|\.(com|net|org|cn)(?![A-Za-z0-9])"
    r"|txt(小说)?下载|免费(txt)?小说|电子书下载|更多精彩.{0,12}(小说|尽在|访问|下载|关注|阅读)"
    r"|本书来自.{0,20}(网|站|书屋|下载|txt|论坛)|(网友|书友|论坛|本站).{0,12}整理制作"
    r"|本书由.{0,20}(整理|制作|提供|收集|上传|首发|网友)|手机(阅读|用户|版).{0,8}(请|访问|网址|登录|wap)"
    r"|首页\s*\||点此(察看|查看|下载|阅读)|^(回?首页|回?目录|[上下前后]一[页章]|返回(首页|目录|书页))$)"
)


SCRIPT_CHOICES = ("keep", "simplified", "traditional")

# How a run saved before these rules existed read its text: a config.json without the fields reads
# them as these values, so an old run evaluates and resumes on the text it trained on.
DATA_BEFORE_CLEANING_RULES = {"inline_watermarks": False, "drop_garbled": False, "script": "keep",
                              "half_width": False, "chinese_punctuation": False}


def setting(default: Any, help: str, *, group: Optional[str] = None) -> Any:
    """A settings field: its default, the help text of its flag, and the --help group it is listed in
    (the section's own unless given: data, model, training, evaluation or output)."""
    return field(default=default, metadata={"help": help, **({"group": group} if group else {})})


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise LstmgenError(message)


@dataclass
class DataConfig:
    valid_fraction: float = setting(0.05, "share of every document, taken from its end, held out for validation")
    test_fraction: float = setting(0.05, "share of every document, taken from its very end, held out for testing")
    valid_path: Optional[str] = setting(None, "explicit validation text (file or folder) instead of a split")
    test_path: Optional[str] = setting(None, "explicit test text (file or folder) instead of a split")
    advert_pattern: str = setting(DEFAULT_ADVERT_PATTERN, "regex: a short line matching it is dropped as an advert")
    max_advert_line: int = setting(80, "lines longer than this are story text, never dropped as adverts")
    inline_watermarks: bool = setting(True, "remove what download sites put inside paragraphs: spans with a web "
                                            "address, and site notes that recur at paragraph ends or starts")
    drop_garbled: bool = setting(True, "leave out paragraphs that are mojibake (text decoded with the wrong codec, "
                                       "runs of replacement marks, rare-character soup)")
    script: str = setting("keep", "simplified | traditional: convert every file with OpenCC | keep: as written")
    half_width: bool = setting(True, "full-width Latin letters and digits become half-width (Ａ１ -> A1)")
    chinese_punctuation: bool = setting(True, "ASCII , . ; : ! brackets and quotes beside Chinese characters "
                                              "become full-width (，。；：！（）“”)")

    def __post_init__(self) -> None:
        _check(self.script in SCRIPT_CHOICES, f"--script must be one of {', '.join(SCRIPT_CHOICES)}")
        _check(0 <= self.valid_fraction < 1, "--valid-fraction must be in [0, 1)")
        _check(0 <= self.test_fraction < 1, "--test-fraction must be in [0, 1)")
        _check(self.valid_fraction + self.test_fraction < 1, "valid and test fractions must sum below 1")


TOKENIZER_KINDS = ("char", "word", "hybrid", "whitespace")


@dataclass
class TokenizerConfig:
    tokenizer: str = setting("char", "char | word (jieba) | hybrid (frequent words + characters) | whitespace")
    user_dict: Optional[str] = setting(None, "jieba user dictionary file (word and hybrid)")
    hybrid_min_count: int = setting(20, "hybrid: words seen at least this often in training stay whole")
    min_freq: int = setting(1, "tokens rarer than this in the training split become <unk>")
    max_vocab: int = setting(0, "keep at most this many tokens (0: no limit)")
    workers: int = setting(0, "processes for segmentation (0: one per core)")

    def __post_init__(self) -> None:
        _check(self.tokenizer in TOKENIZER_KINDS, f"--tokenizer must be one of {', '.join(TOKENIZER_KINDS)}")
        _check(self.hybrid_min_count >= 1, "--hybrid-min-count must be at least 1")
        _check(self.min_freq >= 1, "--min-freq must be at least 1")
        _check(self.max_vocab >= 0, "--max-vocab must be 0 (no limit) or positive")
        _check(self.workers >= 0, "--workers must be 0 (auto) or positive")


OUTPUT_KINDS = ("full", "tied", "adaptive")


@dataclass
class ModelConfig:
    embed_size: int = setting(256, "size of the token embedding")
    hidden_size: int = setting(1024, "LSTM units per layer")
    num_layers: int = setting(1, "stacked LSTM layers")
    dropout: float = setting(0.0, "dropout on embeddings, between layers and before the output layer")
    weight_drop: float = setting(0.0, "DropConnect on the LSTM's recurrent weights, one mask per training window")
    embed_drop: float = setting(0.0, "drop whole token types from the input embedding, one mask per training window")
    locked_dropout: bool = setting(
        False, "--dropout on the embeddings and the LSTM's output uses one mask per sequence, not per step")
    output: str = setting("tied", "full | tied (shares the embedding; a projection when sizes differ) | adaptive")
    adaptive_cutoffs: str = setting("auto", "adaptive softmax cluster edges, e.g. 2000,10000 (auto: 500,2000 up to "
                                            "20k tokens, else 2000,10000,50000)")

    def __post_init__(self) -> None:
        _check(self.embed_size >= 1, "--embed-size must be positive")
        _check(self.hidden_size >= 1, "--hidden-size must be positive")
        _check(self.num_layers >= 1, "--num-layers must be at least 1")
        _check(0 <= self.dropout < 1, "--dropout must be in [0, 1)")
        _check(0 <= self.weight_drop < 1, "--weight-drop must be in [0, 1)")
        _check(0 <= self.embed_drop < 1, "--embed-drop must be in [0, 1)")
        _check(self.output in OUTPUT_KINDS, f"--output must be one of {', '.join(OUTPUT_KINDS)}")
        if self.adaptive_cutoffs != "auto":
            try:
                cutoffs = [int(c) for c in self.adaptive_cutoffs.split(",")]
            except ValueError:
                raise LstmgenError("--adaptive-cutoffs must be 'auto' or increasing integers like 2000,10000")
            _check(all(a < b for a, b in zip(cutoffs, cutoffs[1:])) and cutoffs[0] > 0,
                   "--adaptive-cutoffs must be increasing positive integers")


PRECISIONS = ("auto", "fp32", "int8")  # generate --precision: the weights a CPU generates with
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class TrainConfig:
    batch_size: int = setting(32, "parallel streams (per process: under torchrun the global batch is processes x "
                                  "this)")
    seq_len: int = setting(64, "tokens per truncated-BPTT window")
    epochs: float = setting(5.0, "passes over the training split (fractions allowed)")
    time_budget: Optional[str] = setting(None, "stop after this much training time, e.g. 10m, 90s, 1h")
    lr: float = setting(0.002, "peak learning rate")
    optimizer: str = setting("adam", "adam | adamw | sgd")
    weight_decay: float = setting(0.0, "decoupled for adamw, L2 for the others")
    schedule: str = setting("constant", "constant | cosine | linear (decay to lr * min_lr_ratio)")
    warmup_steps: int = setting(0, "linear warm-up from 0 to lr")
    min_lr_ratio: float = setting(0.1, "where cosine/linear decay ends, as a fraction of lr")
    clip: float = setting(0.5, "clip the global gradient norm to this (0: no clipping)")
    eval_every: Union[str, int] = setting(0, "validate every N steps and at the end of each epoch, or every duration "
                                             "of training such as 30s instead (0: at the end of each epoch)",
                                          group="evaluation")
    ema_decay: float = setting(0.0, "validate, test and keep an exponential moving average of the weights, e.g. "
                                    "0.999 (0: off)", group="evaluation")
    eval_tokens: int = setting(0, "score at most this many validation tokens per evaluation (0: all)",
                               group="evaluation")
    seed: int = setting(1234, "seeds weights, dropout and sampling; same seed, same run (on a CPU)")
    device: str = setting("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:1 | mps")
    threads: int = setting(0, "CPU threads for torch (0: torch's default)")
    amp: str = setting("auto", "auto (bf16 autocast where a bf16 step runs: on a GPU with bf16, and in training "
                               "steps on a CPU with AMX) | bf16 | off")
    save_every: Union[str, int] = setting(0, "write a resumable state every N steps, or every duration of training "
                                             "such as 2m (0: at every evaluation)", group="output")
    nan_policy: str = setting("stop", "stop | backoff (halve the lr once and go back to the last good weights)")
    tensorboard: bool = setting(False, "also log every evaluation to RUN/tensorboard (needs the tensorboard package)",
                                group="output")
    init_from: Optional[str] = setting(None, "a trained run to start from (fine-tuning): its best weights, tokenizer, "
                                             "vocabulary and model shape; its other settings too unless given")

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "--batch-size must be positive")
        _check(self.seq_len >= 1, "--seq-len must be positive")
        _check(self.epochs > 0, "--epochs must be positive")
        _check(self.lr > 0, "--lr must be positive")
        _check(self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        _check(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}")
        _check(self.warmup_steps >= 0, "--warmup-steps must be 0 or positive")
        _check(0 <= self.min_lr_ratio <= 1, "--min-lr-ratio must be in [0, 1]")
        _check(self.clip >= 0, "--clip must be 0 (off) or positive")
        self.eval_every = _steps_or_duration(self.eval_every, "--eval-every")
        _check(self.eval_tokens >= 0, "--eval-tokens must be 0 or positive")
        _check(0 <= self.ema_decay < 1, "--ema-decay must be in [0, 1)")
        _check(self.threads >= 0, "--threads must be 0 or positive")
        _check(self.amp in ("auto", "bf16", "off"), "--amp must be auto, bf16 or off")
        _check(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device) is not None,
               f"--device must be auto, cpu, cuda, cuda:N or mps, not {self.device!r}")
        self.save_every = _steps_or_duration(self.save_every, "--save-every")
        _check(self.nan_policy in ("stop", "backoff"), "--nan-policy must be stop or backoff")
        if self.time_budget is not None:
            parse_duration(self.time_budget)


def _steps_or_duration(value: Union[str, int], flag: str) -> Union[str, int]:
    """A count of steps as an int ("500" -> 500), or a duration as given ("30s"), checked."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int):
        _check(value >= 0, f"{flag} must be 0 or positive")
        return value
    try:
        parse_duration(value)
    except LstmgenError:
        raise LstmgenError(f"{flag} must be a number of steps like 500 or a duration like 30s, 2m")
    return value


def every(value: Union[str, int]) -> tuple[int, float]:
    """``eval_every``/``save_every`` as (steps, seconds); the one not given is 0."""
    return (value, 0.0) if isinstance(value, int) else (0, parse_duration(value))


def parse_duration(text: str) -> float:
    """Parse "90s", "10m", "1.5h" or a bare number of seconds into seconds."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = str(text).strip().lower()
    try:
        if text and text[-1] in units:
            seconds = float(text[:-1]) * units[text[-1]]
        else:
            seconds = float(text)
    except ValueError:
        raise LstmgenError(f"cannot read the duration {text!r}: write it like 90s, 10m or 1.5h")
    _check(seconds > 0, f"the duration {text!r} must be positive")
    return seconds


@dataclass
class RunConfig:
    """Everything a run was trained with; saved as config.json."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunConfig":
        def build(kind: type, values: dict[str, Any]) -> Any:
            known = {f.name for f in dataclasses.fields(kind)}
            return kind(**{k: v for k, v in values.items() if k in known})

        return cls(
            data=build(DataConfig, {**DATA_BEFORE_CLEANING_RULES, **raw.get("data", {})}),
            tokenizer=build(TokenizerConfig, raw.get("tokenizer", {})),
            model=build(ModelConfig, raw.get("model", {})),
            train=build(TrainConfig, raw.get("train", {})),
            preset=raw.get("preset", "default"),
        )


SECTIONS = {"data": DataConfig, "tokenizer": TokenizerConfig, "model": ModelConfig, "train": TrainConfig}

# Presets override the dataclass defaults, section by section.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The seed report, exactly: jieba words, embed 128, hidden 1024, 1 layer, batch 20, seq 30,
    # Adam 0.002, clip 0.5, full softmax, no dropout, 5 epochs.
    "seed": {
        "tokenizer": {"tokenizer": "word", "min_freq": 1, "max_vocab": 0},
        "model": {"embed_size": 128, "hidden_size": 1024, "num_layers": 1, "dropout": 0.0, "output": "full"},
        "train": {"batch_size": 20, "seq_len": 30, "lr": 0.002, "optimizer": "adam", "clip": 0.5,
                  "epochs": 5.0, "schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0},
    },
    # The best recipe found for a laptop's CPU (BENCHMARKS.md says how it was measured and what each
    # part bought): characters, an adaptive softmax (the output layer cost as much as the LSTM), small
    # batches, a brisk lr, a little dropout, and AdamW's weight decay (a 10-minute run begins to overfit
    # before its end; more dropout lost); and what is validated and kept is a moving average of the
    # weights over about the last 1,000 steps.
    "default": {
        "tokenizer": {"tokenizer": "char", "min_freq": 1},
        "model": {"embed_size": 256, "hidden_size": 512, "num_layers": 1, "dropout": 0.1, "output": "adaptive"},
        "train": {"batch_size": 16, "seq_len": 64, "lr": 0.005, "optimizer": "adamw", "clip": 1.0,
                  "epochs": 5.0, "schedule": "cosine", "warmup_steps": 50, "weight_decay": 0.1,
                  "ema_decay": 0.999},
    },
    # For a GPU: characters, wide, and strongly regularised, since in a few minutes it sees a novel
    # collection dozens of times (BENCHMARKS.md, the GPU contest): a batch of 256 costs a big GPU barely
    # more per step than 64; dropout on the recurrent weights beat more batch alone; and the 1536-wide
    # model caught up with the 1024-wide one while still improving faster. An epoch takes seconds there,
    # so validating (on the first 50,000 tokens; the test scores all) and saving the large resumable
    # state after every one took a good share of the time: it validates every 15 s and saves every
    # minute of training instead.
    "gpu": {
        "tokenizer": {"tokenizer": "char"},
        "model": {"embed_size": 512, "hidden_size": 1536, "num_layers": 2, "dropout": 0.4, "weight_drop": 0.5,
                  "output": "tied"},
        "train": {"batch_size": 256, "seq_len": 128, "lr": 0.004, "optimizer": "adamw", "clip": 1.0,
                  "epochs": 60.0, "schedule": "cosine", "warmup_steps": 100, "weight_decay": 0.1,
                  "eval_tokens": 50000, "eval_every": "15s", "save_every": "1m"},
    },
    # A few seconds on any machine: for tests and smoke runs.
    "tiny": {
        "tokenizer": {"tokenizer": "char"},
        "model": {"embed_size": 16, "hidden_size": 32, "num_layers": 1, "output": "tied"},
        "train": {"batch_size": 4, "seq_len": 16, "lr": 0.01, "epochs": 1.0, "clip": 1.0},
    },
}


def overrides_from_settings(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"time_budget": "10m", "hidden_size": 768}`` (settings by their flag names, with _ or -) as
    ``build_config``'s per-section overrides.

    Raises:
        LstmgenError: a name that is no setting (with the nearest one, if any).
    """
    sections = {f.name: name for name, kind in SECTIONS.items() for f in dataclasses.fields(kind)}
    overrides: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in settings.items():
        name = key.replace("-", "_")
        if name not in sections:
            import difflib

            near = difflib.get_close_matches(name, sections, n=1)
            raise LstmgenError(f"{key!r} is not a setting{f'; did you mean {near[0]!r}?' if near else ''} "
                               f"(lstmgen train --help lists them)")
        overrides[sections[name]][name] = value
    return overrides


def build_config(preset: str = "default", overrides: Optional[dict[str, dict[str, Any]]] = None) -> RunConfig:
    """A RunConfig from a preset, with per-section overrides applied on top.

    Args:
        preset: a key of ``PRESETS``.
        overrides: ``{"train": {"seq_len": 30}, ...}``; values of None are ignored.
    """
    _check(preset in PRESETS, f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    sections: dict[str, Any] = {}
    for name, kind in SECTIONS.items():
        values = dict(PRESETS[preset].get(name, {}))
        values.update({k: v for k, v in (overrides or {}).get(name, {}).items() if v is not None})
        sections[name] = kind(**values)
    return RunConfig(preset=preset, **sections)
