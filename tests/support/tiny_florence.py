"""A tiny, randomly initialised Florence-2 in the Hugging Face folder layout, built at test time.

`Florence2Captioner` loads it exactly as it loads florence-community/Florence-2-large: transformers'
native classes, local files only.  What it keeps of the real checkpoint: the architecture (DaViT vision
tower, projector, BART encoder-decoder, tied word embeddings), BART's special-token ids (<s> 0, <pad> 1,
</s> 2, <unk> 3; decoding starts at </s>, <s> is forced first, </s> is forced at the length limit), a
byte-level BPE tokenizer with <mask> after the merges and <image> last, and a CLIP image processor with
Florence-2's mean, std and resampling.  What it shrinks: 64 px images (65 image tokens, not 577), one
layer per stack, 32 dims, a few hundred tokens learnt from the paragraph below.  It has no location
tokens (`<loc_0>` ...): only region tasks need them, and the processor asks the tokenizer for nothing
but its image token.

Its captions are word salad: tests check their shape, never their words.  The same seed writes the
same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMAGE_SIZE_PX = 64
# The vision tower reduces 4x, then 2x: an 8 x 8 grid of image tokens, plus the one temporal token.
IMAGE_TOKENS = (IMAGE_SIZE_PX // 8) ** 2 + 1
HIDDEN_DIMS = 32  # the text model's width; the projector must map image features to it
VOCAB_SIZE = 400  # the byte alphabet, the special tokens and ~140 merges
# Room for the image tokens and the prompt in the encoder, and for a 256-token caption in the decoder.
MAX_POSITIONS = 512
# At transformers' default (0.02) a random decoder with tied embeddings echoes its input token, so
# every caption would be "</s>" or a run of "<s>".  With larger weights the image moves the tokens:
# the four sample photos get four different captions.
INIT_STD = 0.5
# Florence-2's image normalisation (ImageNet's) and bicubic resampling, as its preprocessor config says.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
BICUBIC = 3
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, in BART's order
BOS_ID, PAD_ID, EOS_ID = 0, 1, 2
# With `ends_at_once`, this much on </s>'s logit: the random logits are a few units at most.
EOS_BIAS = 100.0

# What the tokenizer learns its merges from: the task prompts (so they tokenize to words, as in BART's
# vocabulary) and caption-like sentences.
CORPUS = (
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "The image shows a product photo on a plain white background.",
    "The image is a close-up of a cup of coffee on a saucer on a wooden table.",
    "A cat is sitting on the floor and looking at the camera.",
    "An astronaut in a white suit is standing in front of a flag.",
    "A rocket is taking off from the launch pad, with smoke and fire below it.",
    "The background is blurred, and the light comes from the left of the picture.",
    "The shoe is black with a white sole, and the bag is brown leather with a gold buckle.",
)


def build_tiny_florence(dest: Path, *, seed: int = 0, ends_at_once: bool = False) -> Path:
    """Write the model folder to `dest` (created) and return it.

    `ends_at_once`: its generation config biases </s> so far that every caption ends right after the
    forced <s>: empty and complete (the random model otherwise runs to the token limit).
    """
    import torch
    from transformers import Florence2ForConditionalGeneration

    dest.mkdir(parents=True, exist_ok=True)
    processor = _processor()
    processor.save_pretrained(dest)
    config = _config(vocab_size=len(processor.tokenizer), image_token_id=processor.image_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config)
    generation = model.generation_config
    generation.forced_bos_token_id = BOS_ID  # as BART's and Florence-2's checkpoints: "</s><s>words</s>"
    if ends_at_once:
        generation.sequence_bias = [[[EOS_ID], EOS_BIAS]]
    model.save_pretrained(dest)
    return dest


def _processor() -> Any:
    from transformers import BartTokenizerFast, CLIPImageProcessorPil, Florence2Processor

    vocab, merges = _vocab_and_merges()
    tokenizer = BartTokenizerFast(
        vocab=vocab,
        merges=merges,
        extra_special_tokens={"image_token": "<image>"},
    )
    images = CLIPImageProcessorPil(
        size={"height": IMAGE_SIZE_PX, "width": IMAGE_SIZE_PX},
        do_center_crop=False,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        resample=BICUBIC,
        image_seq_length=IMAGE_TOKENS,  # Florence2Processor reads it from here
    )
    # `pure_text` is the captions' parser; post_process_generation refuses a task whose parser the
    # config does not name.
    return Florence2Processor(
        image_processor=images, tokenizer=tokenizer, post_processor_config={"pure_text": {}}
    )


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE learnt from CORPUS: the special tokens first, the 256 bytes, the merges, <mask>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(CORPUS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    vocab["<mask>"] = len(vocab)
    merges = [(str(left), str(right)) for left, right in model["merges"]]
    return vocab, merges


def _config(*, vocab_size: int, image_token_id: int) -> Any:
    from transformers import Florence2Config

    text = {
        "model_type": "bart",
        "vocab_size": vocab_size,
        "max_position_embeddings": MAX_POSITIONS,
        "d_model": HIDDEN_DIMS,
        "encoder_layers": 1,
        "decoder_layers": 1,
        "encoder_attention_heads": 2,
        "decoder_attention_heads": 2,
        "encoder_ffn_dim": 2 * HIDDEN_DIMS,
        "decoder_ffn_dim": 2 * HIDDEN_DIMS,
        "dropout": 0.0,
        "init_std": INIT_STD,
        "bos_token_id": BOS_ID,
        "pad_token_id": PAD_ID,
        "eos_token_id": EOS_ID,
        "decoder_start_token_id": EOS_ID,
        "forced_eos_token_id": EOS_ID,
    }
    vision = {
        # Two stages (stride 4, then 2) where Florence-2 has four; windows of 4 tile both grids.
        "depths": [1, 1],
        "patch_size": [7, 3],
        "patch_stride": [4, 2],
        "patch_padding": [3, 1],
        "patch_prenorm": [False, True],
        "embed_dim": [16, HIDDEN_DIMS],
        "num_heads": [1, 2],
        "num_groups": [1, 2],
        "window_size": 4,
        "projection_dim": HIDDEN_DIMS,
        "drop_path_rate": 0.0,
        "initializer_range": INIT_STD,
    }
    return Florence2Config(
        text_config=text,
        vision_config=vision,
        image_token_id=image_token_id,
        initializer_range=INIT_STD,
        tie_word_embeddings=True,
    )
