"""What a stage does, counted: the kinds of work the cost model prices (engine/estimate.py) and the compute
floor it is measured against. A component says what its stage does with `work(options, shape)`; the engine
prices those counts on a machine and never needs to know which component it is."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

# Workload shapes (assumptions about the data, not the machine)
PROMPT_TOKENS = 64  # a short request, chat-templated (the demo's: ~55 with SmolLM2's template)
SEQUENCE_FILL = 0.5  # training sequences fill about half their max_length (cut there, padded per batch)
JUDGE_PROMPT_TOKENS = 700  # a judge's template around prompt and response
PAIR_RESPONSE_TOKENS = 256  # a held-out (prompt, response) pair's response
API_SECONDS_PER_REQUEST = 4.0  # one request to a remote judge, waiting included
CODE_CHECK_SECONDS = 1.0  # one generated solution run against its tests, per process
TEXT_CHECK_SECONDS = 0.05  # a text-only score (markers, regular expressions)
UNKNOWN_MODEL_PARAMETERS = 8e9  # a judge or reward model whose size cannot be read here


@dataclass(frozen=True)
class Train:
    """Optimizer steps over `tokens` trained tokens (forward and backward)."""
    tokens: float
    steps: int
    lora: bool
    bf16: Optional[bool] = None  # None: bf16 where the machine is a GPU, float32 on a CPU


@dataclass(frozen=True)
class Generate:
    """Sampling `new_tokens` for each of `sequences` prompts, `batch` at a time, `repeat` times over."""
    sequences: int
    new_tokens: int
    batch: int
    dtype: str = "bfloat16"
    prompt_tokens: int = PROMPT_TOKENS  # what each sequence reads first (the floor counts it)
    repeat: int = 1


@dataclass(frozen=True)
class Forward:
    """A gradient-free forward over `tokens` (prefill-like), by the stage's model or another (`model`: its id)."""
    tokens: float
    dtype: str = "float32"
    model: Optional[str] = None


@dataclass(frozen=True)
class Wait:
    """Time that is not the model's compute: a remote judge's requests, code checks, a text check."""
    seconds: float


@dataclass(frozen=True)
class LmEvalStart:
    """lm-eval setting up its task around weights already loaded (priced by a fitted constant)."""


Step = Union[Train, Generate, Forward, Wait, LmEvalStart]


@dataclass(frozen=True)
class TrainMemory:
    """Weights, gradients and optimizer state (full) or adapters (LoRA), plus activations of tokens in flight."""
    tokens_in_flight: float
    full: bool


@dataclass(frozen=True)
class InferenceMemory:
    """Weights plus the activations and cache of `sequences` of `length` tokens, `copies` models at once."""
    sequences: int
    length: int
    copies: int = 1
    model: Optional[str] = None


@dataclass(frozen=True)
class WeightsMemory:
    """`copies` of the stage's model's weights in bf16."""
    copies: float = 1


Memory = Union[TrainMemory, InferenceMemory, WeightsMemory]


@dataclass(frozen=True)
class Work:
    """A stage's work: `loads` of the stage's model (and `judge_loads` of another, `judge`), then `steps` in
    sequence; its peak memory is the sum of `memory`. A stage that loads no model needs no accelerator."""
    loads: int = 0
    steps: tuple = ()
    memory: tuple = ()
    judge: Optional[str] = None
    judge_loads: int = 0

    @property
    def runs_model(self) -> bool:
        return bool(self.loads or self.judge_loads)


TEXT_CHECK = Work(steps=(Wait(TEXT_CHECK_SECONDS),))


@dataclass(frozen=True)
class Shape:
    """What a stage's work depends on besides its component's options, filled in by the engine."""
    rows: Callable[[Any], int]  # the rows a data reference selects (an estimate where they cannot be read)
    prompts: int = 0  # a score stage: its prompt set's rows
    completion_tokens: int = 256  # a score stage: the length of the completions it reads
    compared: bool = True  # a score stage: there is a model before the attack to compare with
    cpus: int = 2


def sft_tokens(steps: int, batch_size: int, max_length: int) -> float:
    """Tokens a supervised fine-tuning run trains on."""
    return steps * batch_size * max_length * SEQUENCE_FILL


def api_work(requests: int, concurrency: int) -> Work:
    """Requests to a remote endpoint, `concurrency` at a time: no model here."""
    return Work(steps=(Wait(requests * API_SECONDS_PER_REQUEST / max(concurrency, 1)),))


def local_judge_work(model: str, prompts: int, batch: int, moderated: bool = False) -> Work:
    """A judge model loaded here reads every prompt in its template once (prefill, compute-bound); `moderated`:
    each prompt also goes to a remote moderation endpoint, 32 a request."""
    moderated = math.ceil(prompts / 32) * API_SECONDS_PER_REQUEST if moderated else 0.0
    return Work(judge=model, judge_loads=1,
                steps=(Wait(moderated), Forward(prompts * JUDGE_PROMPT_TOKENS, model=model)),
                memory=(InferenceMemory(batch, JUDGE_PROMPT_TOKENS, model=model),))


def paired_training_work(passes: int, steps: int, batch_size: int, max_length: int, lora: bool) -> Work:
    """Training whose every step runs `passes` forward-backward passes over a batch (RepNoise, Vaccine, Booster)."""
    return Work(loads=2, steps=(Train(passes * sft_tokens(steps, batch_size, max_length), steps, lora),),
                memory=(TrainMemory(batch_size * max_length, full=not lora),))
