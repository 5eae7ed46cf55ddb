"""The multi-domain safety classifier: an instruction-tuned Llama (GGUF) on llama-cpp-python.

The question, the answer's schema and its checks are pure (`cutout_fleet.safety.classification`); this
module runs the model.  What it relies on in llama-cpp-python, and why:

- The grammar is built here, from `answer_schema` (`LlamaGrammar.from_json_schema`), and passed as
  `grammar=`: `response_format` would fall back silently to plain JSON if the schema did not convert.
- The chat template is the GGUF's own (Llama 3.1 ships one); a file without one gets llama-cpp-python's
  fallback format (`llama-2`).  `chat_format` says which was used.
- The deadline is checked between tokens of a streamed completion: `create_chat_completion` passes no
  `stopping_criteria` to its chat handlers.  Prompt evaluation is one call into llama.cpp and cannot be
  cut; the prompt is bounded (`prompt_messages` cuts the caption and the detections) instead.
- Greedy decoding (temperature 0, no repeat penalty: a penalty would bend the JSON) from a fixed seed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from cutout_fleet.errors import ConfigError
from cutout_fleet.safety.classification import (
    Classification,
    MalformedAnswer,
    answer_schema,
    check_attributes,
    max_answer_tokens,
    parse_answer,
    prompt_messages,
)
from cutout_fleet.safety.verdict import Detection
from cutout_fleet.worker.interrupts import INTERRUPTS

log = logging.getLogger(__name__)

MS_PER_S = 1000.0
ALL_LAYERS = -1  # llama.cpp: offload every layer
PULL_HINT = "run `cutout models pull llama-3.1-8b-instruct` with this worker's settings (CUTOUT_MODEL_DIR)"
REPULL_HINT = (
    "run `cutout models pull --force llama-3.1-8b-instruct` with this worker's settings to fetch it again"
)
INSTALL_HINT = (
    "install the 'safety-full' extra on the worker (pip install 'cutout-fleet[safety-full]'; for a GPU, "
    "llama-cpp-python built with CUDA) and restart it"
)


@dataclass(frozen=True)
class ClassifierAnswer:
    """One classify() call: the checked answer, or why there is none, and what the model did.

    `finish`: `stop` (the model ended its answer), `length` (it hit max_tokens), `timeout` (the deadline
    passed; generation was cut) or `error` (llama.cpp raised).  `timings_ms`: `classify` (the whole call)
    always; `prompt` (until the first token: template, tokenizing, prompt evaluation, first sample) and
    `generate` (the remaining tokens) once a token came.  `tokens`: tokens generated, as streamed.
    """

    classification: Classification | None
    error: str | None
    raw: str
    finish: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    tokens: int = 0


@dataclass
class _Generation:
    """What one streamed completion produced, as it went."""

    pieces: list[str] = field(default_factory=list)
    finish: str = "error"
    error: str | None = None
    first_token_at: float | None = None


def _llama_cpp() -> ModuleType:
    try:
        import llama_cpp
    except Exception as exc:  # ImportError, or OSError when its native library cannot load
        raise ConfigError(f"llama-cpp-python is not usable here ({exc}); {INSTALL_HINT}") from exc
    module: ModuleType = llama_cpp
    return module


def _offload_device(llama_cpp: ModuleType, n_gpu_layers: int) -> str:
    if n_gpu_layers == 0 or not llama_cpp.llama_supports_gpu_offload():
        return "cpu"
    info = bytes(llama_cpp.llama_print_system_info()).decode("utf-8", "replace")
    return "cuda" if "CUDA" in info else "gpu"


class LlamaClassifier:
    """The loaded model.  Create once per process, after fork (llama.cpp's threads and a CUDA context do
    not survive a fork), and reuse for every image; calls must not overlap (one context, one KV cache)."""

    def __init__(
        self,
        model_path: Path,
        *,
        n_ctx: int = 4096,
        n_gpu_layers: int | None = None,
        n_threads: int | None = None,
        max_time_s: float = 20.0,
        seed: int = 0,
    ) -> None:
        llama_cpp = _llama_cpp()
        if not model_path.is_file():
            raise ConfigError(f"the classifier model {model_path} is missing; {PULL_HINT}")
        offload = bool(llama_cpp.llama_supports_gpu_offload())
        layers = n_gpu_layers if n_gpu_layers is not None else (ALL_LAYERS if offload else 0)
        if layers != 0 and not offload:
            log.warning("n_gpu_layers=%s, but this llama-cpp-python has no GPU offload: CPU only", layers)
        self.device: str = _offload_device(llama_cpp, layers)
        self.model_path = model_path
        self.max_time_s = max_time_s
        self.seed = seed
        self.n_ctx = n_ctx
        try:
            self._llama: Any = llama_cpp.Llama(
                model_path=str(model_path),
                n_ctx=n_ctx,
                n_gpu_layers=layers,
                n_threads=n_threads,
                n_threads_batch=n_threads,  # else every core for the prompt, whatever n_threads says
                seed=seed,
                verbose=False,
            )
        except INTERRUPTS:
            raise
        except Exception as exc:  # llama-cpp-python says only "Failed to load model from file"
            raise ConfigError(
                f"llama.cpp cannot load {model_path} ({exc}): the file is damaged or not a GGUF model "
                f"this llama-cpp-python supports; {REPULL_HINT}, or upgrade llama-cpp-python"
            ) from exc
        self.chat_format: str = str(self._llama.chat_format)
        self._grammar_class: Any = llama_cpp.LlamaGrammar
        self._grammars: dict[tuple[str, ...], Any] = {}
        self._pid = os.getpid()
        log.info(
            "loaded %s on %s (chat format %s, %s threads)",
            model_path.name,
            self.device,
            self.chat_format,
            self._llama.n_threads,
        )

    def grammar(self, attributes: Sequence[str] = ()) -> Any:
        """The LlamaGrammar of `answer_schema(attributes)`, made once per attribute set."""
        wanted = check_attributes(attributes)
        if wanted not in self._grammars:
            schema = json.dumps(answer_schema(wanted))
            self._grammars[wanted] = self._grammar_class.from_json_schema(schema, verbose=False)
        return self._grammars[wanted]

    def classify(
        self, caption: str | None, detections: Sequence[Detection], attributes: Sequence[str] = ()
    ) -> ClassifierAnswer:
        """Score every safety domain for one photo.

        Never raises for a bad, slow or failed answer: the answer says why it has no classification.
        Time limits (INTERRUPTS) pass through; an unknown attribute is the caller's error (ValueError),
        and so is a call in a forked child of the process that loaded the model (RuntimeError).
        """
        if os.getpid() != self._pid:
            raise RuntimeError("LlamaClassifier was loaded before a fork; load it in the child")
        wanted = check_attributes(attributes)
        started = time.perf_counter()
        run = self._generate(prompt_messages(caption, detections, wanted), wanted, started + self.max_time_s)
        ended = time.perf_counter()

        raw = "".join(run.pieces)
        timings = {"classify": (ended - started) * MS_PER_S}
        if run.first_token_at is not None:
            timings["prompt"] = (run.first_token_at - started) * MS_PER_S
            timings["generate"] = (ended - run.first_token_at) * MS_PER_S
        classification: Classification | None = None
        error = run.error
        if run.finish == "timeout":
            error = f"timed out after {self.max_time_s} s ({len(run.pieces)} tokens generated)"
        elif run.finish != "error":
            try:
                classification = parse_answer(raw, wanted)
            except MalformedAnswer as exc:
                cut = f"cut short at {len(run.pieces)} tokens; " if run.finish == "length" else ""
                if run.finish == "length" and len(run.pieces) < max_answer_tokens(wanted):
                    # Below the answer's budget: llama.cpp stopped because the context window filled up.
                    cut = (
                        f"the context window ({self.n_ctx} tokens) filled up after {len(run.pieces)} tokens "
                        "of answer (raise CUTOUT_SAFETY__CLASSIFIER_N_CTX); "
                    )
                error = f"malformed answer: {cut}{exc}"
        return ClassifierAnswer(classification, error, raw, run.finish, timings, tokens=len(run.pieces))

    def _generate(
        self, messages: list[dict[str, str]], attributes: tuple[str, ...], deadline: float
    ) -> _Generation:
        """Stream the model's answer until it ends, hits max_tokens, or `deadline` (perf_counter) passes."""
        run = _Generation()
        try:
            chunks: Iterator[dict[str, Any]] = self._llama.create_chat_completion(
                messages=messages,
                grammar=self.grammar(attributes),
                temperature=0.0,
                repeat_penalty=1.0,
                max_tokens=max_answer_tokens(attributes),
                seed=self.seed,
                stream=True,
            )
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    content = choice["delta"].get("content")
                    if content:
                        run.pieces.append(content)
                        run.first_token_at = run.first_token_at or time.perf_counter()
                    if choice["finish_reason"] is not None:
                        run.finish = str(choice["finish_reason"])
                        return run
                    if time.perf_counter() >= deadline:
                        run.finish = "timeout"
                        return run
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # ends llama-cpp-python's generator now, not when it is collected
        except INTERRUPTS:
            raise  # a Celery time limit is the item's timeout, not the classifier's failure
        except Exception as exc:  # llama.cpp and the chat template raise untyped errors
            run.error = f"llama.cpp failed: {type(exc).__name__}: {exc}"
            return run
        run.error = "llama.cpp ended the answer without saying why"
        return run
