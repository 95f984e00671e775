"""Loading a chat model for serving: any transformers causal LM saved in a folder with a chat-template tokenizer.

CUDA when present, in bf16 (fp16 where the card has no bf16); otherwise CPU in float32 with a bounded number of
torch threads, because torch's default of one thread per core starves every other process on a shared machine.

Plain Python and torch: no Django imports.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel in eval mode, on `device`
    tokenizer: Any  # its tokenizer, left padding, with a chat template and a pad token
    device: torch.device
    dtype: torch.dtype
    path: str
    max_context: int  # prompt plus reply, in tokens: the model's position limit


def device_resolve(device: str | torch.device = "auto") -> torch.device:
    """`"auto"`: CUDA when torch sees a GPU, else CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def dtype_for(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that supports it, fp16 on an older GPU, float32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def max_context_of(config: Any, tokenizer: Any = None) -> int:
    """The longest sequence the model's positions allow (prompt plus reply)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    # Tokenizers without a limit report a huge sentinel (int(1e30)); only trust a plausible value.
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10_000_000:
        return limit
    return 2048


def model_load(path: str | Path, *, device: str | torch.device = "auto", threads: int = 0) -> LoadedModel:
    """Load the causal LM and tokenizer saved in the folder `path`, ready to generate (eval mode, no grad).

    `threads` > 0 bounds torch's CPU threads (process-wide); 0 leaves torch's setting alone.
    Raises ValueError naming the problem when the folder is missing, holds no causal LM, or its tokenizer has no
    chat template.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"Chat model folder {str(folder)!r} does not exist.")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{str(folder)!r} holds no transformers model (no config.json).")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{str(folder)!r} holds no model transformers can read: {exc}") from exc
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ValueError(f"{str(folder)!r} holds a {config.model_type!r} model, which is not a causal language model.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{str(folder)!r} holds no tokenizer transformers can read: {exc}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"The tokenizer in {str(folder)!r} has no chat template.")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        # A user's model often has no pad token; any id works, attention masks hide the padding.
        tokenizer.pad_token = tokenizer.eos_token

    target = device_resolve(device)
    dtype = dtype_for(target)
    if threads > 0 and target.type == "cpu":
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True)
    model.to(target)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=target,
        dtype=dtype,
        path=str(folder),
        max_context=max_context_of(model.config, tokenizer),
    )
