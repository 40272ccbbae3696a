"""The spam data of chapter 6, beyond the book's listings: reading it through the course's data registry, the
CSV files, the three loaders, and a test set with the natural share of spam.

Introduced in ch06_finetune_classification (6.2, 6.3). The book downloads and unzips the SMS Spam Collection
itself (``download_and_unzip_spam_data``, kept here under the book's name and signature, backed by the course's
verified download); ``get_data("sms-spam-collection")`` fetches it (cached, checked against its sha256, from the
offline mirror when there is one) and ``load_spam_data`` reads it as the book does.
The book's balancing, split and data set (``create_balanced_dataset``, ``random_split``, ``SpamDataset``) live
in ``llmscratch.classification``; the whole preparation is::

    paths = prepare_spam_csvs("data/sms_spam")          # train.csv, validation.csv, test.csv, test_natural.csv
    train_loader, val_loader, test_loader = create_spam_loaders(
        [paths["train"], paths["validation"], paths["test"]], tokenizer)   # 130, 19 and 38 batches of 8

A real inbox is not half spam. The book's test split is balanced (as many spam as ham messages); the natural
test set (``create_natural_test_set``) keeps the collection's own share, 747 of 5,572 messages (13.4%), for
precision, recall and F1 that say what a user of the filter would see.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pandas as pd
from torch.utils.data import DataLoader

from .bpe_gpt2 import GPT2_ENDOFTEXT_ID
from .classification import SpamDataset, create_balanced_dataset, random_split
from .data import DATA_FILES, fetch, get_data, sha256_of
from .files import atomic_write
from .gpt2_tokenizer import allowing_endoftext
from .settings import get_settings

SPAM_DATA = "sms-spam-collection"  # the registry's name (llmscratch.data.DATA_FILES)
LABEL_IDS = {"ham": 0, "spam": 1}  # the book's mapping, after balancing
CLASS_NAMES = ("not spam", "spam")  # what classify_review answers for the class ids 0 and 1
SPLIT_FILES = {"train": "train.csv", "validation": "validation.csv", "test": "test.csv",
               "test_natural": "test_natural.csv"}


def load_spam_data(path=None):
    """The SMS Spam Collection as a DataFrame with the columns ``Label`` ("ham"/"spam") and ``Text``, read as the
    book reads it: 5,572 rows, 4,825 ham and 747 spam (ch06_finetune_classification, 6.2).

    ``path`` defaults to the registry's file (``get_data("sms-spam-collection")``). With pandas' default quoting,
    a message that opens with a double quote runs to the next double quote: one message swallows the next two
    lines (two ham messages), so the file's 5,574 lines make 5,572 rows, as in the book
    (``quoting=csv.QUOTE_NONE`` would keep all 5,574).
    """
    path = get_data(SPAM_DATA) if path is None else Path(path)
    return pd.read_csv(path, sep="\t", header=None, names=["Label", "Text"])


def encode_labels(df):
    """A copy of ``df`` with the labels mapped as the book maps them: ham -> 0, spam -> 1
    (ch06_finetune_classification, 6.2)."""
    unknown = sorted(set(df["Label"].astype(str)) - set(LABEL_IDS))
    if unknown:
        raise ValueError(f"unknown labels {unknown}: expected only {sorted(LABEL_IDS)} (already mapped to 0/1?)")
    df = df.copy()
    df["Label"] = df["Label"].map(LABEL_IDS)
    return df


def create_natural_test_set(df, train_frac=0.7, validation_frac=0.1):
    """A test set with the spam share of ``df`` (13.4% for the SMS collection) that holds no message of the
    training or validation split (ch06_finetune_classification, beyond the book).

    ``df`` holds the text labels, as ``load_spam_data`` returns it. The set starts from the book's test split
    (balancing, then ``random_split(train_frac, validation_frac)``) without the messages whose text also appears
    in the training or validation split: the collection repeats some messages, spam above all (41 of the book's
    300 test rows, 37 of them spam, are texts the classifier trained or was validated on). Then come ham
    messages that balancing left out (never seen either), drawn with ``random_state=123``, as many as the
    natural ratio asks for the remaining spam messages (every spam message is in the balanced set, so the extra
    ones are ham). Labels stay text; rows are shuffled (``random_state=123``). For the book's split: 114 spam
    and 736 ham messages.
    """
    balanced = create_balanced_dataset(df)  # checks the frame
    train_df, validation_df, test_df = random_split(balanced, train_frac, validation_frac)
    seen_texts = set(train_df["Text"]) | set(validation_df["Text"])
    test_df = test_df[~test_df["Text"].isin(seen_texts)]
    num_spam, num_ham = (int((df["Label"] == label).sum()) for label in ("spam", "ham"))
    test_spam = int((test_df["Label"] == "spam").sum())
    needed = round(test_spam * num_ham / num_spam) - (len(test_df) - test_spam)
    left_out = df.drop(index=balanced.index)
    pool = left_out[(left_out["Label"] == "ham") & ~left_out["Text"].isin(seen_texts)]
    if needed > len(pool):
        raise ValueError(f"the natural ratio needs {needed} more ham messages, but only {len(pool)} unseen ones are "
                         "left out of the balanced set: use a larger test fraction or a larger data set")
    extra = pool.sample(max(needed, 0), random_state=123)
    return pd.concat([test_df, extra]).sample(frac=1, random_state=123).reset_index(drop=True)


def save_csv(df, path):
    """Write ``df`` as the book does (``df.to_csv(path, index=None)``), all or nothing (a temporary file renamed
    into place: an interrupted write never leaves half a CSV behind); returns the path."""
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(df.to_csv(index=None).encode("utf-8"))
    return path


def prepare_spam_csvs(folder, df=None, train_frac=0.7, validation_frac=0.1):
    """Balance, map the labels to 0/1, split 70/10/20 and save ``train.csv``, ``validation.csv`` and
    ``test.csv`` as the book does, plus ``test_natural.csv`` (``create_natural_test_set``) in ``folder``
    (ch06_finetune_classification, 6.2).

    ``df`` defaults to ``load_spam_data()``. Returns ``{"train": path, "validation": ..., "test": ...,
    "test_natural": ...}``. With the defaults: 1,045, 149, 300 and 850 rows.
    """
    df = load_spam_data() if df is None else df
    balanced_df = create_balanced_dataset(df)
    balanced_df = encode_labels(balanced_df)
    frames = dict(zip(("train", "validation", "test"), random_split(balanced_df, train_frac, validation_frac)))
    frames["test_natural"] = encode_labels(create_natural_test_set(df, train_frac, validation_frac))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return {name: save_csv(frame, folder / SPLIT_FILES[name]) for name, frame in frames.items()}


def create_spam_loaders(csv_files, tokenizer, batch_size=8, max_length=None, pad_token_id=GPT2_ENDOFTEXT_ID,
                        num_workers=0):
    """One loader per CSV file, as in the book: the first file is the training set (shuffled, full batches
    only), the others (validation, test...) keep their order and their last, smaller batch
    (ch06_finetune_classification, 6.3).

    ``max_length=None`` pads every set to the training set's longest text (120 tokens for the book's split;
    longer texts of the other sets are truncated); ``max_length=1024`` pads to GPT-2's whole context (exercise
    6.1). Seed first (``torch.manual_seed(123)``, as the book) for the book's shuffle order. A tiktoken
    ``tokenizer`` encodes ``<|endoftext|>`` in a message as the special token (``allowing_endoftext``). Returns a
    tuple of loaders, in the order of ``csv_files``.
    """
    csv_files = list(csv_files)
    if not csv_files:
        raise ValueError("give at least one CSV file, the training set first")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokenizer = allowing_endoftext(tokenizer)  # a message may quote <|endoftext|>: the special token
    train_dataset = SpamDataset(csv_file=csv_files[0], max_length=max_length, tokenizer=tokenizer,
                                pad_token_id=pad_token_id)
    datasets = [train_dataset] + [
        SpamDataset(csv_file=path, max_length=train_dataset.max_length, tokenizer=tokenizer,
                    pad_token_id=pad_token_id)
        for path in csv_files[1:]
    ]
    loaders = [DataLoader(dataset=dataset, batch_size=batch_size, shuffle=i == 0, num_workers=num_workers,
                          drop_last=i == 0)
               for i, dataset in enumerate(datasets)]
    if len(loaders[0]) == 0:
        raise ValueError(f"the training set has {len(train_dataset)} texts, fewer than one batch of {batch_size}")
    return tuple(loaders)


def download_and_unzip_spam_data(url, zip_path, extracted_path, data_file_path):
    """The book's listing 6.1 under its name and signature, backed by the course's verified download: the SMS
    Spam Collection from ``url`` saved as ``data_file_path`` (ch06_finetune_classification, 6.2).

    As in the book, a file already at ``data_file_path`` is kept (when its sha256 is the registry's; a damaged
    one is fetched again), and the member ``SMSSpamCollection`` of the zip is saved with a ``.tsv`` extension.
    The fetch is the data registry's (``llmscratch.data.fetch`` with the entry ``"sms-spam-collection"`` and
    this ``url``): the offline mirror (``LLMSCRATCH_DATA_MIRROR``) when it holds the file, otherwise ``url``,
    with a timeout and retries; the member's sha256 is checked before anything is kept, and a failure is a
    ``DataDownloadError`` (``DataChecksumError`` for a wrong file) that says what to do. The zip is unpacked in a
    staging folder inside ``extracted_path`` and deleted there, so nothing is written at ``zip_path`` (kept for
    the book's signature). Paths are printed relative to the current folder.
    """
    entry = dataclasses.replace(DATA_FILES[SPAM_DATA], url=url)
    data_file_path = Path(data_file_path)
    try:
        shown = os.path.relpath(data_file_path)
    except ValueError:  # another drive (Windows)
        shown = str(data_file_path)
    if data_file_path.is_file() and sha256_of(data_file_path) == entry.sha256:
        print(f"{shown} already exists. Skipping download and extraction.")
        return

    # Downloading and unzipping the file: the registry's fetch (cache in extracted_path, offline mirror, url)
    mirror = get_settings().data_mirror
    from_mirror = mirror is not None and (Path(mirror) / entry.filename).is_file()
    fetched = fetch(entry, extracted_path, mirror)

    # Add .tsv file extension (the registry's file name has it; move the file where the caller wants it)
    if fetched.resolve() != data_file_path.resolve():
        data_file_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched, data_file_path)
    source = "copied from the offline mirror (LLMSCRATCH_DATA_MIRROR)" if from_mirror else "downloaded"
    print(f"File {source} and saved as {shown}")
