"""Chapter 6: the spam data (the book's counts), the classifier's shapes and parameter counts, the book's loop and
the resumable one, metrics, save -> load, clear errors, and a tiny GPT that learns spam from scratch."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from llmscratch.classification import (
    SpamDataset, calc_accuracy_loader, calc_loss_batch, calc_loss_loader, classify_review, create_balanced_dataset,
    evaluate_model, plot_values, random_split, train_classifier_simple,
)
from llmscratch.classification_data import (
    create_natural_test_set, create_spam_loaders, encode_labels, load_spam_data, prepare_spam_csvs,
)
from llmscratch.classifier import (
    classification_metrics, confusion_matrix, count_trainable_parameters, load_classifier, plot_confusion_matrix,
    precision_recall_f1, prepare_classifier, save_classifier, train_classifier_resumable,
)
from llmscratch.gpt import GPT_CONFIG_124M, GPT_CONFIG_TINY, GPTModel

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_CONFIG = {**GPT_CONFIG_TINY, "emb_dim": 16, "n_heads": 2, "n_layers": 1}  # for the loop tests


@pytest.fixture(scope="module")
def spam_df():
    return load_spam_data()


@pytest.fixture(scope="module")
def spam_csvs(spam_df, tmp_path_factory):
    return prepare_spam_csvs(tmp_path_factory.mktemp("sms_spam"), spam_df)


@pytest.fixture(scope="module")
def loaders(spam_csvs, tokenizer):
    torch.manual_seed(123)
    return create_spam_loaders([spam_csvs["train"], spam_csvs["validation"], spam_csvs["test"]], tokenizer)


def small_loaders(spam_csvs, tokenizer, tmp_path, rows=48):
    """Train/validation loaders over the first ``rows`` and the next 16 rows of train.csv (a few steps)."""
    train = pd.read_csv(spam_csvs["train"])
    train[:rows].to_csv(tmp_path / "train_small.csv", index=None)
    train[rows:rows + 16].to_csv(tmp_path / "val_small.csv", index=None)
    return create_spam_loaders([tmp_path / "train_small.csv", tmp_path / "val_small.csv"], tokenizer)


def small_classifier(seed=123, drop_rate=0.1):
    torch.manual_seed(seed)
    model = prepare_classifier(GPTModel({**SMALL_CONFIG, "drop_rate": drop_rate}), trainable_layers="all")
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)


# --- the data: the book's numbers ------------------------------------------------------------------------------


def test_spam_collection_reads_as_in_the_book(spam_df):
    assert len(spam_df) == 5572
    assert spam_df["Label"].value_counts().to_dict() == {"ham": 4825, "spam": 747}


def test_balancing_and_split_sizes(spam_df):
    balanced = create_balanced_dataset(spam_df)
    assert balanced["Label"].value_counts().to_dict() == {"ham": 747, "spam": 747}
    assert [len(part) for part in random_split(encode_labels(balanced), 0.7, 0.1)] == [1045, 149, 300]
    assert encode_labels(balanced)["Label"].value_counts().to_dict() == {0: 747, 1: 747}


def test_loaders_have_the_books_batches(loaders):
    train_loader, val_loader, test_loader = loaders
    assert train_loader.dataset.max_length == 120  # the longest training text, in tokens
    assert [len(loader) for loader in loaders] == [130, 19, 38]
    input_batch, target_batch = next(iter(train_loader))
    assert input_batch.shape == (8, 120) and target_batch.shape == (8,)
    assert val_loader.dataset.max_length == test_loader.dataset.max_length == 120


def test_padding_and_the_full_context_option(spam_csvs, tokenizer):
    """Padding uses <|endoftext|>, 50256; max_length=1024 pads to GPT-2's whole context (exercise 6.1)."""
    dataset = SpamDataset(spam_csvs["validation"], tokenizer, max_length=1024)
    ids, label = dataset[0]
    text_length = len(tokenizer.encode(dataset.data["Text"][0]))
    assert ids.shape == (1024,) and label.dtype == torch.long
    assert ids[:text_length].tolist() == tokenizer.encode(dataset.data["Text"][0])
    assert set(ids[text_length:].tolist()) == {50256}
    short = SpamDataset(spam_csvs["validation"], tokenizer, max_length=4)
    assert all(len(ids) == 4 for ids in short.encoded_texts)  # longer texts truncated


def test_natural_test_set_keeps_the_real_spam_share_without_training_texts(spam_df, spam_csvs):
    natural = create_natural_test_set(spam_df)
    counts = natural["Label"].value_counts().to_dict()
    assert counts == {"ham": 736, "spam": 114}
    assert counts["spam"] / len(natural) == pytest.approx(747 / 5572, abs=0.002)
    seen = set(pd.read_csv(spam_csvs["train"])["Text"]) | set(pd.read_csv(spam_csvs["validation"])["Text"])
    assert not set(natural["Text"]) & seen
    assert len(pd.read_csv(spam_csvs["test_natural"])) == 850


# --- the classifier -------------------------------------------------------------------------------------------


def test_last_token_logits_of_the_books_example(tokenizer):
    inputs = torch.tensor(tokenizer.encode("Do you have time")).unsqueeze(0)
    assert inputs.tolist() == [[5211, 345, 423, 640]]
    model = prepare_classifier(GPTModel(GPT_CONFIG_TINY))
    with torch.no_grad():
        outputs = model(inputs)
    assert outputs.shape == (1, 4, 2)


def test_trainable_parameters_of_the_124M_classifier():
    """The book's freeze (6.5) on GPT-2 small with OpenAI's qkv bias, built on the meta device (no memory)."""
    counts = {}
    for layers in ("all", "last_block", "none"):
        with torch.device("meta"):
            model = GPTModel({**GPT_CONFIG_124M, "qkv_bias": True})
        prepare_classifier(model, num_classes=2, trainable_layers=layers)
        counts[layers] = count_trainable_parameters(model)
    block = 3 * (768 * 768 + 768) + (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 4 * 768
    head = 768 * 2 + 2
    assert counts == {"all": 124_441_346, "last_block": block + 2 * 768 + head, "none": head}
    assert counts["last_block"] == 7_090_946
    assert model.out_head.weight.shape == (2, 768)


def test_prepare_classifier_freezes_as_the_book():
    model = prepare_classifier(GPTModel(SMALL_CONFIG))
    trainable = {name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("trf_blocks") else "")
                 for name, param in model.named_parameters() if param.requires_grad}
    assert trainable == {"trf_blocks.0", "final_norm", "out_head"}  # the last (only) block


def test_first_token_option_reads_the_first_position():
    """token_position="first" (exercise 6.3) classifies by the first token's logits."""
    torch.manual_seed(0)
    model = prepare_classifier(GPTModel({**SMALL_CONFIG, "drop_rate": 0.0}))
    inputs, targets = torch.randint(0, 50257, (4, 6)), torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        logits = model(inputs)
        for position, index in (("last", -1), ("first", 0)):
            expected = torch.nn.functional.cross_entropy(logits[:, index, :], targets)
            loss = calc_loss_batch(inputs, targets, model, "cpu", token_position=position)
            torch.testing.assert_close(loss, expected)
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=2)
    first = (logits[:, 0, :].argmax(-1) == targets).float().mean().item()
    assert calc_accuracy_loader(loader, model, "cpu", token_position="first") == pytest.approx(first)
    assert calc_loss_loader(loader, model, "cpu", token_position="first") == pytest.approx(
        torch.nn.functional.cross_entropy(logits[:, 0, :], targets).item(), rel=1e-5)


def test_classify_review_truncates_a_text_longer_than_the_context(tokenizer):
    torch.manual_seed(0)
    model = prepare_classifier(GPTModel({**SMALL_CONFIG, "context_length": 32}))
    text = "You are a winner you have been specially selected to receive $1000 cash. " * 20
    assert len(tokenizer.encode(text)) > 32
    assert classify_review(text, model, tokenizer, "cpu", max_length=32) in ("spam", "not spam")
    assert classify_review("Hi", model, tokenizer, "cpu", max_length=32, token_position="first") in (
        "spam", "not spam")
    with pytest.raises(ValueError, match="max_length"):
        classify_review(text, model, tokenizer, "cpu")  # the book's default None: say what to pass
    with pytest.raises(ValueError, match="context length"):
        classify_review(text, model, tokenizer, "cpu", max_length=33)


def test_save_load_round_trip_gives_identical_predictions(tmp_path, tokenizer):
    torch.manual_seed(0)
    model = prepare_classifier(GPTModel(SMALL_CONFIG)).eval()
    path = save_classifier(tmp_path / "classifier.pt", model, SMALL_CONFIG, max_length=40)
    loaded, info = load_classifier(path)
    assert info["max_length"] == 40 and info["token_position"] == "last" and info["num_classes"] == 2
    inputs = torch.randint(0, 50257, (3, 40))
    with torch.no_grad():
        assert torch.equal(model(inputs), loaded(inputs))
    texts = ["WINNER!! Claim your prize now", "See you at lunch?"]
    assert [classify_review(t, model, tokenizer, "cpu", max_length=40) for t in texts] == [
        classify_review(t, loaded, tokenizer, "cpu", max_length=info["max_length"]) for t in texts]
    from llmscratch.checkpoints import save_checkpoint

    other = save_checkpoint(tmp_path / "pretraining.pt", GPTModel(SMALL_CONFIG), config=SMALL_CONFIG)
    with pytest.raises(ValueError, match="not a classifier"):
        load_classifier(other)


# --- metrics ---------------------------------------------------------------------------------------------------


class TokenParity(torch.nn.Module):
    """A stand-in classifier: predicts class (token id % 2) at every position."""

    def forward(self, in_idx):
        odd = (in_idx % 2).float()
        return torch.stack([1 - odd, odd], dim=-1)


def test_metrics_on_a_hand_made_example():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 0, 1])
    last_tokens = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])  # predictions: one false positive, one false negative
    inputs = torch.stack([torch.tensor([7, 8, int(t)]) for t in last_tokens])
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=3)
    metrics = classification_metrics(loader, TokenParity(), "cpu")
    assert metrics["confusion_matrix"] == [[3, 1], [1, 3]]
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.75) and metrics["num_examples"] == 8
    assert classification_metrics(loader, TokenParity(), "cpu", token_position="first")["confusion_matrix"] == [
        [0, 4], [0, 4]]  # the first token, 7, is odd: everything flagged
    matrix = confusion_matrix([1, 1, 0, 0], [1, 0, 0, 0])
    assert matrix.tolist() == [[2, 0], [1, 1]]
    assert precision_recall_f1(matrix) == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    assert precision_recall_f1(confusion_matrix([0, 0], [0, 0])) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_plots_return_figures_with_portuguese_labels():
    fig = plot_values([0, 1, 2], [0, 8, 16], [0.5, 0.6, 0.9], [0.5, 0.55, 0.8], label="accuracy")
    assert fig.axes[0].get_xlabel() == "Épocas" and fig.axes[0].get_ylabel() == "Acurácia"
    assert fig.axes[1].get_xlabel() == "Exemplos vistos"
    fig = plot_confusion_matrix([[687, 49], [8, 106]])
    assert fig.axes[0].get_xlabel() == "Classe prevista"
    assert {text.get_text() for text in fig.axes[0].texts} == {"687", "49", "8", "106"}
    with pytest.raises(ValueError, match="same length"):
        plot_values([0, 1], [0, 8], [0.5], [0.5, 0.6])


# --- training ----------------------------------------------------------------------------------------------------


def test_resumable_loop_equals_the_books_loop(spam_csvs, tokenizer, tmp_path, capsys):
    """Same losses, accuracies, examples and printed lines; an interrupted run resumed gives the same again."""
    args = dict(device="cpu", num_epochs=2, eval_freq=3, eval_iter=2)
    torch.manual_seed(123)
    train_loader, val_loader = small_loaders(spam_csvs, tokenizer, tmp_path)
    model, optimizer = small_classifier()
    book = train_classifier_simple(model, train_loader, val_loader, optimizer, **args)
    book_lines = capsys.readouterr().out

    torch.manual_seed(123)
    train_loader, val_loader = small_loaders(spam_csvs, tokenizer, tmp_path)
    model, optimizer = small_classifier()
    resumable = train_classifier_resumable(model, train_loader, val_loader, optimizer, **args, progress=False)
    assert resumable == book and book[4] == 2 * 48 and len(book[2]) == 2
    assert capsys.readouterr().out == book_lines
    assert book_lines.splitlines()[0].startswith("Ep 1 (Step 000000): Train loss ")
    assert "Training accuracy: " in book_lines and "| Validation accuracy: " in book_lines

    torch.manual_seed(123)
    train_loader, val_loader = small_loaders(spam_csvs, tokenizer, tmp_path)
    model, optimizer = small_classifier()
    path = tmp_path / "run.pt"
    train_classifier_resumable(model, train_loader, val_loader, optimizer, **{**args, "num_epochs": 1},
                               checkpoint_path=path, config=SMALL_CONFIG, progress=False)
    torch.manual_seed(999)  # the resumed run restores the generators itself
    model, optimizer = small_classifier(seed=999)
    resumed = train_classifier_resumable(model, train_loader, val_loader, optimizer, **args, checkpoint_path=path,
                                         resume=True, config=SMALL_CONFIG, progress=False)
    assert resumed == book


def test_bad_input_raises_clear_value_errors(spam_df, spam_csvs, tokenizer):
    model = prepare_classifier(GPTModel(SMALL_CONFIG))
    inputs = torch.randint(0, 50257, (2, 5))
    with pytest.raises(ValueError, match="one class label per text"):
        calc_loss_batch(inputs, inputs, model, "cpu")  # chapter 5's next-token targets
    with pytest.raises(ValueError, match="token_position"):
        calc_loss_batch(inputs, torch.tensor([0, 1]), model, "cpu", token_position="middle")
    with pytest.raises(ValueError, match="balancing"):
        create_balanced_dataset(encode_labels(spam_df))  # labels already 0/1
    with pytest.raises(ValueError, match="fractions"):
        random_split(spam_df, 0.8, 0.3)
    with pytest.raises(ValueError, match="max_length"):
        SpamDataset(spam_csvs["validation"], tokenizer, max_length=0)
    with pytest.raises(ValueError, match="trainable_layers"):
        prepare_classifier(GPTModel(SMALL_CONFIG), trainable_layers="last")
    empty = DataLoader(TensorDataset(inputs, torch.tensor([0, 1])), batch_size=4, drop_last=True)
    with pytest.raises(ValueError, match="no batches"):
        calc_accuracy_loader(empty, model, "cpu")
    with pytest.raises(ValueError, match="fewer than one batch"):
        create_spam_loaders([spam_csvs["validation"]], tokenizer, batch_size=1000)
    with pytest.raises(ValueError, match="eval_freq"):
        train_classifier_simple(model, empty, empty, None, "cpu", 1, 0, 1)
    with pytest.raises(ValueError, match="num_batches"):
        evaluate_model(model, empty, empty, "cpu", 0)
    with pytest.raises(ValueError, match="unknown labels"):
        encode_labels(encode_labels(spam_df))


@pytest.mark.slow
def test_tiny_gpt_learns_spam_from_scratch(loaders, capsys):
    """A 2-layer, 64-dim GPT from random weights, all layers trained for 3 epochs: >= 90% test accuracy (the book's
    from-scratch experiment with GPT-2 small reaches 93.67%)."""
    train_loader, val_loader, test_loader = loaders
    torch.manual_seed(123)
    model = prepare_classifier(GPTModel({**GPT_CONFIG_TINY, "drop_rate": 0.0}), trainable_layers="all")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, fused=True)
    start = time.perf_counter()
    train_classifier_simple(model, train_loader, val_loader, optimizer, "cpu", num_epochs=3, eval_freq=50,
                            eval_iter=5)
    test_accuracy = calc_accuracy_loader(test_loader, model, "cpu")
    print(f"test accuracy {test_accuracy:.2%} after {time.perf_counter() - start:.0f} s")
    assert test_accuracy >= 0.90, capsys.readouterr().out


# --- issue 20: <|endoftext|> in a message, misuse of classify_review -----------------------------------------------


def test_endoftext_in_a_message_is_the_special_token(tmp_path, tokenizer):
    """A message quoting <|endoftext|> used to crash inside tiktoken (loaders, classify_review)."""
    from llmscratch.gpt2_tokenizer import gpt2_tokenizer

    text = "Free entry <|endoftext|> win a prize"
    pd.DataFrame({"Label": [1, 0], "Text": [text, "see you at lunch"]}).to_csv(tmp_path / "t.csv", index=None)
    (loader,) = create_spam_loaders([tmp_path / "t.csv"], tokenizer, batch_size=2)
    expected_ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})  # as text_to_token_ids encodes
    assert 50256 in expected_ids and loader.dataset.encoded_texts[0][:len(expected_ids)] == expected_ids
    model = prepare_classifier(GPTModel(SMALL_CONFIG)).eval()
    padded = expected_ids + [50256] * (16 - len(expected_ids))
    with torch.no_grad():
        label = int(model(torch.tensor([padded]))[0, -1].argmax())
    assert classify_review(text, model, gpt2_tokenizer(), "cpu", max_length=16) == ("spam" if label else "not spam")
    with pytest.raises(ValueError, match=r"pass llmscratch.gpt2_tokenizer.gpt2_tokenizer\(\)"):
        classify_review(text, model, tokenizer, "cpu", max_length=16)  # tiktoken's own encode refuses it


def test_classify_review_refuses_an_empty_text_and_a_model_without_a_classifier_head(tokenizer):
    model = prepare_classifier(GPTModel(SMALL_CONFIG)).eval()
    for text in ("", "   "):
        with pytest.raises(ValueError, match="text must be a non-empty message"):
            classify_review(text, model, tokenizer, "cpu", max_length=8)
    with pytest.raises(ValueError, match=r"out_head has \d+ outputs, not the 2 classes .*prepare_classifier"):
        classify_review("Hello", GPTModel(SMALL_CONFIG).eval(), tokenizer, "cpu", max_length=8)


def test_classify_review_gives_the_trained_classifiers_answers(tmp_path, tokenizer):
    """A classifier overfit (deterministically, on the CPU) on four messages answers each of them right."""
    texts = {"WINNER!! Claim your free cash prize now, call 09061701461": "spam",
             "URGENT! You have won a 1 week FREE membership, text WIN to 87121": "spam",
             "Ok lar, see you at home tonight": "not spam",
             "I'll call you later when I leave the office": "not spam"}
    frame = pd.DataFrame({"Label": [int(a == "spam") for a in texts.values()], "Text": list(texts)})
    frame.to_csv(tmp_path / "four.csv", index=None)
    torch.manual_seed(123)
    (loader,) = create_spam_loaders([tmp_path / "four.csv"], tokenizer, batch_size=4)
    model, optimizer = small_classifier(drop_rate=0.0)
    for _ in range(100):
        for inputs, targets in loader:
            optimizer.zero_grad()
            calc_loss_batch(inputs, targets, model, "cpu").backward()
            optimizer.step()
    answers = {text: classify_review(text, model, tokenizer, "cpu", max_length=loader.dataset.max_length)
               for text in texts}
    assert answers == texts
