"""quamba: post-training W8A8 quantization of Mamba language models (the Quamba recipe)."""

from quamba.api import load, load_with_tokenizer
from quamba.errors import QuambaError
from quamba.models.tokenizer import load_tokenizer
from quamba.quantization.checkpoint import save_quantized
from quamba.quantization.config import METHODS, QuantConfig, get_method
from quamba.quantization.quantize import QuantizedMambaLM, quantize

__all__ = ["load", "load_with_tokenizer", "load_tokenizer", "quantize", "save_quantized", "QuantConfig",
           "METHODS", "get_method", "QuantizedMambaLM", "QuambaError"]
__version__ = "0.1.0"
