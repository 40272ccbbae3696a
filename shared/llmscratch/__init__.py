"""llmscratch: the package of the Portuguese course on *Build a Large Language Model (From Scratch)*.

Every notebook builds its code step by step and then imports the same code from here, so the book's public
names are available at the top level::

    from llmscratch import GPTModel, create_dataloader_v1, generate, train_model_simple
"""

from .attention import (
    CausalAttention, MultiHeadAttention, MultiHeadAttentionSDPA, MultiHeadAttentionWrapper, SelfAttention_v1,
    SelfAttention_v2,
)
from .bpe import BPETokenizer
from .checkpoints import load_checkpoint, save_checkpoint
from .data import DATA_FILES, get_data
from .dataloader import GPTDatasetV1, create_dataloader_v1
from .decoding import generate, print_sampled_tokens, softmax_with_temperature
from .gpt import (
    GELU, GPT2_CONFIGS, GPT_CONFIG_124M, GPT_CONFIG_355M, GPT_CONFIG_774M, GPT_CONFIG_1558M, FeedForward, GPTModel,
    LayerNorm, TransformerBlock, generate_text_simple,
)
from .gpt2_download import GPT2_REPOS, download_gpt2
from .gpt2_weights import load_pretrained_gpt2, pretrained_gpt2_config
from .gpt_demo import DummyGPTModel, DummyLayerNorm, DummyTransformerBlock, ExampleDeepNeuralNetwork
from .pretraining import (
    calc_loss_batch, calc_loss_loader, evaluate_model, generate_and_print_sample, plot_losses, text_to_token_ids,
    token_ids_to_text, train_model_simple,
)
from .settings import get_device, get_settings
from .tokenizers import SimpleTokenizerV1, SimpleTokenizerV2, build_vocab, split_text
from .train_advanced import plot_learning_rate, train_model

__version__ = "0.1.0"

__all__ = [
    # ch02_text_data
    "BPETokenizer", "DATA_FILES", "GPTDatasetV1", "SimpleTokenizerV1", "SimpleTokenizerV2", "build_vocab",
    "create_dataloader_v1", "get_data", "split_text",
    # ch03_attention
    "CausalAttention", "MultiHeadAttention", "MultiHeadAttentionSDPA", "MultiHeadAttentionWrapper",
    "SelfAttention_v1", "SelfAttention_v2",
    # ch04_gpt_model
    "DummyGPTModel", "DummyLayerNorm", "DummyTransformerBlock", "ExampleDeepNeuralNetwork", "FeedForward", "GELU",
    "GPT2_CONFIGS", "GPTModel", "GPT_CONFIG_124M", "GPT_CONFIG_1558M", "GPT_CONFIG_355M", "GPT_CONFIG_774M",
    "LayerNorm", "TransformerBlock", "generate_text_simple",
    # ch05_pretraining
    "GPT2_REPOS", "calc_loss_batch", "calc_loss_loader", "download_gpt2", "evaluate_model", "generate",
    "generate_and_print_sample", "load_checkpoint", "load_pretrained_gpt2", "plot_learning_rate", "plot_losses",
    "pretrained_gpt2_config", "print_sampled_tokens", "save_checkpoint", "softmax_with_temperature",
    "text_to_token_ids", "token_ids_to_text", "train_model", "train_model_simple",
    # settings
    "get_device", "get_settings",
]
