"""llmscratch: the package of the Portuguese course on *Build a Large Language Model (From Scratch)*.

Every notebook builds its code step by step and then imports the same code from here, so the book's public
names are available at the top level::

    from llmscratch import get_data, create_dataloader_v1, SimpleTokenizerV2
"""

from .bpe import BPETokenizer
from .data import DATA_FILES, get_data
from .dataloader import GPTDatasetV1, create_dataloader_v1
from .settings import get_device, get_settings
from .tokenizers import SimpleTokenizerV1, SimpleTokenizerV2, build_vocab, split_text

__version__ = "0.1.0"

__all__ = [
    "BPETokenizer",
    "DATA_FILES",
    "GPTDatasetV1",
    "SimpleTokenizerV1",
    "SimpleTokenizerV2",
    "build_vocab",
    "create_dataloader_v1",
    "get_data",
    "get_device",
    "get_settings",
    "split_text",
]
