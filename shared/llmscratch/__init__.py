"""llmscratch: the package of the Portuguese course on *Build a Large Language Model (From Scratch)*.

Every notebook builds its code step by step and then imports the same code from here.

What the top level exports
--------------------------
The book's public names of chapters 2 to 5 and appendix D, each under the book's name and signature, plus
the course's settings::

    from llmscratch import GPTModel, create_dataloader_v1, generate, train_model_simple

Where a later chapter redefines a book name (chapter 6's ``calc_loss_batch``, ``calc_loss_loader`` and
``evaluate_model`` work on the last token's class logits), the top level keeps the *first* chapter's
(chapter 5's), and the later chapter's lives in its own module, imported from there::

    from llmscratch.classification import calc_loss_batch     # chapter 6
    from llmscratch.instruction import custom_collate_fn      # chapter 7
    from llmscratch.lora import replace_linear_with_lora      # appendix E

The book repository's names for its fast model and for the GPT-2 download (``GPTModelFast``,
``PyTorchMultiHeadAttention``, ``download_and_load_gpt2``) are exported too, backed by the package's fast path
and safetensors loader. Extensions beyond the book (the fast attention, the KV cache, resumable training, benchmarks) are exported
under their own names or imported from their modules (``llmscratch.kv_cache``, ``llmscratch.resumable``,
``llmscratch.benchmarking``). Modules import only earlier ones: no two modules import each other.
"""

from .attention import (
    CausalAttention, MultiHeadAttention, MultiHeadAttentionSDPA, MultiHeadAttentionWrapper, PyTorchMultiHeadAttention,
    SelfAttention_v1, SelfAttention_v2,
)
from .bpe import BPETokenizer
from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .checkpoints import load_checkpoint, save_checkpoint
from .data import DATA_FILES, get_data
from .dataloader import GPTDatasetV1, create_dataloader_v1
from .decoding import generate, print_sampled_tokens, softmax_with_temperature
from .gpt import (
    GELU, GPT2_CONFIGS, GPT_CONFIG_124M, GPT_CONFIG_355M, GPT_CONFIG_774M, GPT_CONFIG_1558M, GPT_CONFIG_TINY,
    FeedForward, GPTModel, GPTModelFast, LayerNorm, TransformerBlock, generate_text_simple,
)
from .gpt2_download import GPT2_REPOS, download_gpt2
from .gpt2_book_loading import assign, download_and_load_gpt2, load_weights_into_gpt
from .gpt2_weights import load_pretrained_gpt2, pretrained_gpt2_config
from .gpt_demo import DummyGPTModel, DummyLayerNorm, DummyTransformerBlock, ExampleDeepNeuralNetwork
from .kv_cache import generate_text_simple_cached
from .pretraining import (
    calc_loss_batch, calc_loss_loader, create_train_val_loaders, evaluate_model, generate_and_print_sample,
    plot_losses, text_to_token_ids, token_ids_to_text, train_model_resumable, train_model_simple,
)
from .resumable import ResumableRun
from .settings import get_device, get_settings, resolve_device
from .tokenizers import SimpleTokenizerV1, SimpleTokenizerV2, build_vocab, split_text
from .train_advanced import find_highest_gradient, plot_learning_rate, train_model

__version__ = "0.1.0"

__all__ = [
    # ch02_text_data
    "BPETokenizer", "DATA_FILES", "GPT2_ENDOFTEXT_ID", "GPTDatasetV1", "SimpleTokenizerV1", "SimpleTokenizerV2",
    "build_vocab", "create_dataloader_v1", "get_data", "split_text",
    # ch03_attention
    "CausalAttention", "MultiHeadAttention", "MultiHeadAttentionSDPA", "MultiHeadAttentionWrapper",
    "PyTorchMultiHeadAttention", "SelfAttention_v1", "SelfAttention_v2",
    # ch04_gpt_model
    "DummyGPTModel", "DummyLayerNorm", "DummyTransformerBlock", "ExampleDeepNeuralNetwork", "FeedForward", "GELU",
    "GPT2_CONFIGS", "GPTModel", "GPTModelFast", "GPT_CONFIG_124M", "GPT_CONFIG_1558M", "GPT_CONFIG_355M", "GPT_CONFIG_774M",
    "GPT_CONFIG_TINY", "LayerNorm", "TransformerBlock", "generate_text_simple", "generate_text_simple_cached",
    # ch05_pretraining (and appendix D)
    "GPT2_REPOS", "ResumableRun", "assign", "calc_loss_batch", "calc_loss_loader", "create_train_val_loaders",
    "download_and_load_gpt2", "download_gpt2", "evaluate_model", "find_highest_gradient", "generate", "generate_and_print_sample",
    "load_checkpoint", "load_pretrained_gpt2", "load_weights_into_gpt", "plot_learning_rate", "plot_losses",
    "pretrained_gpt2_config", "print_sampled_tokens", "save_checkpoint", "softmax_with_temperature",
    "text_to_token_ids", "token_ids_to_text", "train_model", "train_model_resumable", "train_model_simple",
    # settings
    "get_device", "get_settings", "resolve_device",
]
