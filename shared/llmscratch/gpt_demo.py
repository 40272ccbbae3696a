"""Teaching models of chapter 4: the placeholder GPT of 4.1 and the shortcut-connection demo of 4.4.

Introduced in ch04_gpt_model. These are the book's classes, kept so the chapter's first steps can be rerun from
the package; the real model is ``llmscratch.gpt.GPTModel``. ``DummyGPTModel`` has the final architecture's
embeddings and output head, but its transformer blocks and layer norm do nothing yet.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .gpt import GELU


class DummyGPTModel(nn.Module):
    """The GPT skeleton with placeholder blocks and norm (Introduced in ch04_gpt_model, 4.1).

    Maps token ids (b, num_tokens) to logits (b, num_tokens, vocab_size) like ``GPTModel``, but the
    transformer blocks and the final layer norm return their input unchanged.
    """

    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])

        # Use a placeholder for TransformerBlock
        self.trf_blocks = nn.Sequential(
            *[DummyTransformerBlock(cfg) for _ in range(cfg["n_layers"])])

        # Use a placeholder for LayerNorm
        self.final_norm = DummyLayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(
            cfg["emb_dim"], cfg["vocab_size"], bias=False
        )

    def forward(self, in_idx):
        batch_size, seq_len = in_idx.shape
        tok_embeds = self.tok_emb(in_idx)  # (b, num_tokens, emb_dim)
        pos_embeds = self.pos_emb(torch.arange(seq_len, device=in_idx.device))  # (num_tokens, emb_dim)
        x = tok_embeds + pos_embeds  # (b, num_tokens, emb_dim)
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        x = self.final_norm(x)
        logits = self.out_head(x)  # (b, num_tokens, vocab_size)
        return logits


class DummyTransformerBlock(nn.Module):
    """Placeholder transformer block that returns its input (Introduced in ch04_gpt_model, 4.1)."""

    def __init__(self, cfg):
        super().__init__()
        # A simple placeholder

    def forward(self, x):
        # This block does nothing and just returns its input.
        return x


class DummyLayerNorm(nn.Module):
    """Placeholder layer norm that returns its input (Introduced in ch04_gpt_model, 4.1)."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        # The parameters here are just to mimic the LayerNorm interface.

    def forward(self, x):
        # This layer does nothing and just returns its input.
        return x


class ExampleDeepNeuralNetwork(nn.Module):
    """Five linear + GELU layers, optionally with shortcut connections (Introduced in ch04_gpt_model, 4.4).

    ``layer_sizes`` has six entries (input width, then each layer's output width). With ``use_shortcut=True``
    each layer's input is added to its output wherever their shapes match, which keeps the gradients of the
    early layers from vanishing.
    """

    def __init__(self, layer_sizes, use_shortcut):
        super().__init__()
        self.use_shortcut = use_shortcut
        self.layers = nn.ModuleList([
            nn.Sequential(nn.Linear(layer_sizes[0], layer_sizes[1]), GELU()),
            nn.Sequential(nn.Linear(layer_sizes[1], layer_sizes[2]), GELU()),
            nn.Sequential(nn.Linear(layer_sizes[2], layer_sizes[3]), GELU()),
            nn.Sequential(nn.Linear(layer_sizes[3], layer_sizes[4]), GELU()),
            nn.Sequential(nn.Linear(layer_sizes[4], layer_sizes[5]), GELU())
        ])

    def forward(self, x):
        for layer in self.layers:
            # Compute the output of the current layer
            layer_output = layer(x)  # (b, layer_sizes[i + 1])
            # Check if shortcut can be applied
            if self.use_shortcut and x.shape == layer_output.shape:
                x = x + layer_output
            else:
                x = layer_output
        return x
