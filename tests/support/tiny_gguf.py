"""A tiny random-weight Llama as a GGUF file, written at test time: llama.cpp loads and runs it for real.

It has the production model's architecture (`llama`, grouped-query attention, SwiGLU feed-forward, RMS
norm, RoPE) at toy size, and a Llama-3-style tokenizer: byte-level BPE (`gpt2`, pre-tokenizer
`llama-bpe`) over the 256 byte characters, a few merges, and Llama 3's control tokens.  Every text can be
tokenized (bytes are the fallback) and every answer the grammar allows can be generated, one byte or one
merge at a time.

With `chat_template=True` (the default) the file carries a Llama-3-style Jinja chat template, so
llama-cpp-python takes the same path as with the real Llama 3.1 GGUF: the model's own template.  With
`chat_template=False` it has none, and llama-cpp-python falls back to its built-in `llama-2` format.

The weights are random (seeded): the model's text is nonsense, which is the point: only the grammar makes
its answer valid JSON.  About 0.5 MB, F32; it loads in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

ARCH = "llama"
N_EMBD = 64
N_LAYERS = 2
N_HEAD = 4
N_HEAD_KV = 2  # grouped-query attention, as in Llama 3.1
HEAD_DIM = N_EMBD // N_HEAD
N_FF = 128
CONTEXT_LENGTH = 4096
RMS_EPS = 1e-5
ROPE_FREQ_BASE = 500000.0  # Llama 3's
WEIGHT_STD = 0.5  # large enough that the random logits differ, so greedy decoding varies with the prompt

# Merges over the byte characters (GPT-2's printable stand-ins: Ġ is the space): a few multi-byte tokens, so
# the grammar meets tokens that span several characters.
MERGES = ("e r", "i n", "o n", "Ġ t", 's "', '" :', "Ġ a")
BEGIN_OF_TEXT = "<|begin_of_text|>"
END_OF_TEXT = "<|end_of_text|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
END_OF_TURN = "<|eot_id|>"
CONTROL_TOKENS = (BEGIN_OF_TEXT, END_OF_TEXT, START_HEADER, END_HEADER, END_OF_TURN)

# Llama 3's chat format, without the tool-calling and date parts of the real 3.1 template.  Not byte-equal
# to llama-cpp-python's built-in Llama 3 template, so it is rendered as the GGUF's own Jinja template.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim }}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)


def byte_characters() -> list[str]:
    """GPT-2's byte-level alphabet: byte b -> the printable character that stands for it in a vocabulary."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shifted)
            shifted += 1
    return [chars[b] for b in range(256)]


def vocabulary() -> tuple[list[str], list[int]]:
    """The tokens (bytes in byte order, merge results, control tokens) and their GGUF token types."""
    tokens = byte_characters()
    tokens += ["".join(merge.split(" ")) for merge in MERGES]
    types = [gguf.TokenType.NORMAL] * len(tokens)
    tokens += list(CONTROL_TOKENS)
    types += [gguf.TokenType.CONTROL] * len(CONTROL_TOKENS)
    return tokens, [int(kind) for kind in types]


def _weights(rng: np.random.Generator, n_vocab: int) -> dict[str, np.ndarray]:
    """The tensors, in numpy's row-major shapes (GGUF stores the reverse: ggml's ne[0] is the last axis)."""

    def matrix(rows: int, cols: int) -> np.ndarray:
        scale = WEIGHT_STD / float(np.sqrt(cols))
        weights: np.ndarray = rng.standard_normal((rows, cols)).astype(np.float32) * np.float32(scale)
        return weights

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    tensors = {
        "token_embd.weight": (rng.standard_normal((n_vocab, N_EMBD))).astype(np.float32),
        "output_norm.weight": ones(N_EMBD),
        "output.weight": matrix(n_vocab, N_EMBD) * np.float32(np.sqrt(N_EMBD)),
    }
    for layer in range(N_LAYERS):
        block = f"blk.{layer}"
        tensors |= {
            f"{block}.attn_norm.weight": ones(N_EMBD),
            f"{block}.attn_q.weight": matrix(N_HEAD * HEAD_DIM, N_EMBD),
            f"{block}.attn_k.weight": matrix(N_HEAD_KV * HEAD_DIM, N_EMBD),
            f"{block}.attn_v.weight": matrix(N_HEAD_KV * HEAD_DIM, N_EMBD),
            f"{block}.attn_output.weight": matrix(N_EMBD, N_HEAD * HEAD_DIM),
            f"{block}.ffn_norm.weight": ones(N_EMBD),
            f"{block}.ffn_gate.weight": matrix(N_FF, N_EMBD),
            f"{block}.ffn_up.weight": matrix(N_FF, N_EMBD),
            f"{block}.ffn_down.weight": matrix(N_EMBD, N_FF),
        }
    return tensors


def write_tiny_llama_gguf(path: Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    """Write the tiny model to `path` (same seed, same bytes) and return `path`."""
    tokens, token_types = vocabulary()
    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_name("tiny-random-llama")
    writer.add_context_length(CONTEXT_LENGTH)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("llama-bpe")
    writer.add_token_list(tokens)
    writer.add_token_types(token_types)
    writer.add_token_merges(list(MERGES))
    writer.add_bos_token_id(tokens.index(BEGIN_OF_TEXT))
    writer.add_eos_token_id(tokens.index(END_OF_TURN))
    writer.add_eot_token_id(tokens.index(END_OF_TURN))
    writer.add_add_bos_token(True)
    if chat_template:
        writer.add_chat_template(CHAT_TEMPLATE)

    for name, tensor in _weights(np.random.default_rng(seed), len(tokens)).items():
        writer.add_tensor(name, tensor)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
